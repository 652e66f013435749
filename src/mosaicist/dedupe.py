"""Near-duplicate photos: a perceptual signature per tile, and who duplicates whom.

**Signature.** Each photo gets a 64-bit DCT perceptual hash and a mean
colour (:func:`tile_signatures`), computed when it is indexed, from its
centre square resized to :data:`SIGNATURE_PX` pixels, whatever the tiles'
aspect, crop and size: copies of a photo sign alike even where their subject
windows differ by a few pixels, every index of a photo signs it the same,
and an index made before signatures were stored (square centre tiles) is
signed from its packed tiles, once, without decoding. The hash: the picture's grey
levels (Rec. 601 luma) averaged to 32 x 32 by exact area weights, their 2-D
DCT-II, and one bit per coefficient of the 8 x 8 lowest frequencies, set
when the coefficient is above those 64 coefficients' median (by more than
:data:`_BIT_MARGIN`, so that a flat picture hashes the same whatever its
rounding). It keeps the tile's coarse structure and drops what
re-encoding, resizing and small shifts change. Two tiles whose structure
agrees but whose colours do not (a red and a blue sky) are told apart by
the mean colour.

**Near-duplicates.** Tiles *a* and *b* are near-identical at threshold *T*
when their hashes differ in at most *T* bits and their mean colours by at
most :data:`COLOUR_TOLERANCE` in every channel. Walking the library in order,
a tile is dropped when it is near-identical to an earlier tile that was
kept; so no two kept tiles are near-identical, and every dropped tile names
the first kept one it duplicates, its *leader* (:func:`duplicate_leaders`).

**Mirror images.** A photo mirrored left-right hashes about 32 bits from
the photo, as far as an unrelated one. Given the mirrors' hashes
(:func:`mirrored_tile_signatures`: from the tile's own DCT coefficients,
those of odd horizontal frequency negated, so no second decode), tiles are
also near-identical when one's hash is within *T* bits of the other's
mirror's. The mirrors' hashes are not the hashes with some bits flipped:
the bits are set against the median, which mirroring moves
(flipping the odd horizontal frequencies' bits is only an estimate). The
band index then holds the mirrors' hashes beside the hashes, and the walk compares both.
An index of an older version, without them, is given them when its
near-duplicates are first grouped
(:meth:`mosaicist.library.TileLibrary.duplicate_leaders`), not by its updates.

**Finding the pairs without comparing all of them** (:func:`near_pairs`):
the 64 bits are cut into *m* bands of consecutive bits. Two hashes within
*T* bits differ in at most ``T // m`` bits in at least one band (else they
would differ in at least ``m * (T // m + 1) > T`` bits), so probing, in
each band, every key within ``T // m`` bits of a hash's own key finds every
pair (multi-index hashing; with ``m = T + 1`` it is the plain pigeonhole
split, exact matches in one band). *m* is chosen per run to make the
probes and the expected candidates fewest for the number of tiles; each
candidate pair is then checked exactly. The work is about ``N`` times the
probes plus the candidates; only groups of tiles with equal band keys (the
same photo many times over) make it grow with their size squared. At loose
thresholds most hashes are near (at 64 bits all of them), and the mean
colours are indexed instead where that gives fewer candidates: colours
within :data:`COLOUR_TOLERANCE` lie in the same or neighbouring cubes of
side ``COLOUR_TOLERANCE + 1``.

**Leaders without every pair** (:func:`duplicate_leaders`): copies with one
signature are compared once, and where the candidates, or the near pairs
found, would still be many times those of random hashes (the frames of a
still scene: hashes a few unstable bits apart, every pair near), the tiles
are taken by halves: the
first half's leaders, then the second half's tiles near a tile it kept, then
the rest among themselves; the kept tiles of such a cluster are few, so the
work stays near linear. Where checking the candidates, even those of random
hashes, would cost more than comparing every pair twice (loose thresholds)
and the mean colours do not tell the photos apart either (a library of dark
pictures), the library is walked instead, a block of tiles at a time
compared with every tile kept so far (popcounts of XORs): at most about all
pairs, and about the tiles times the kept ones, which are few then.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator

import numpy as np

from ._choices import DEDUPE_THRESHOLD
from .errors import check_range

#: Version of the grouping rule, in the names of cached leaders and of the folder of a
#: library without its near-duplicates: raised when a change here could make other
#: leaders from the same hashes (a stale cache is not read then).
DEDUPE_VERSION = 2
#: Bits of a tile's perceptual hash.
HASH_BITS = 64
#: Side of the square picture of a crop window that its signature is computed from.
SIGNATURE_PX = 32
#: ``--dedupe`` given without a value (declared in :mod:`mosaicist._choices`).
DEFAULT_THRESHOLD = DEDUPE_THRESHOLD
#: Largest difference of mean colour (0..255, per channel) between near-identical tiles.
COLOUR_TOLERANCE = 12
#: Tiles hashed at a time (bounded memory over memory-mapped libraries).
HASH_CHUNK = 4096
#: Candidate pairs expanded at a time while probing.
PAIR_CHUNK = 1 << 22
# Leaders are found by halves (see _greedy_leaders) where listing the pairs would check
# more than this many times the candidates of random hashes, plus this many per tile.
_BUDGET_FACTOR = 8
_BUDGET_FLOOR = 64
# Groups this small are always solved by listing their pairs.
_SPLIT_BELOW = 64
# One of the band index's expected candidates (probes counted, as _expected_candidates
# does) costs about as much as this many pairs compared in blocks by the walk
# (_walk_leaders): measured 27 to 41, 20,000 and 50,000 CIFAR-10 signatures and random
# hashes, at 8 to 12 bits.
_CANDIDATE_PAIRS = 32
# Tiles, and kept tiles, compared at a time by the walk: blocks of pairs that stay in cache.
_WALK_BLOCK = 128
_WALK_KEPT_BLOCK = 4096
# A candidate of the colour index costs about this many of the band index's expected
# candidates (those count its probes too, which are cheap lookups): measured, 20,000 tiles.
_COLOUR_CANDIDATE_COST = 8

_SIDE = 32
_LOW = 8
# A coefficient must exceed the median by this much (grey levels x 32) to set its bit:
# flat tiles, whose coefficients are rounding noise, then hash to one value.
_BIT_MARGIN = 0.05
_LUMA = np.array([0.299, 0.587, 0.114])


def _area_matrix(size: int, out: int) -> np.ndarray:
    """``(out, size)`` weights averaging ``size`` pixels into ``out`` by their overlaps."""
    edges = np.arange(out + 1) * (size / out)
    starts, ends = edges[:-1, None], edges[1:, None]
    pixels = np.arange(size)[None, :]
    overlap = np.clip(np.minimum(ends, pixels + 1) - np.maximum(starts, pixels), 0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def _dct_rows(size: int, rows: int) -> np.ndarray:
    """The first ``rows`` rows of the orthonormal DCT-II matrix of ``size`` points."""
    k = np.arange(rows)[:, None]
    n = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * math.sqrt(2 / size)
    matrix[0] /= math.sqrt(2)
    return matrix


@functools.lru_cache(maxsize=64)
def _low_frequencies(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Matrices taking ``height x width`` grey levels to their 8 x 8 low DCT coefficients.

    ``rows @ grey @ cols`` is the DCT of the picture averaged to 32 x 32.
    """
    rows = _dct_rows(_SIDE, _LOW) @ _area_matrix(height, _SIDE)
    cols = (_dct_rows(_SIDE, _LOW) @ _area_matrix(width, _SIDE)).T
    rows.setflags(write=False)
    cols.setflags(write=False)
    return rows, cols


def tile_signatures(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Perceptual hash and mean colour of every tile (see the module docstring).

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(N, H, W, 3)`` uint8 (a memory map is read a chunk at a time).

    Returns
    -------
    hashes : numpy.ndarray
        ``(N,)`` uint64.
    colours : numpy.ndarray
        ``(N, 3)`` uint8 mean colours, rounded.
    """
    hashes, _, colours = _signatures(tiles, mirrored=False)
    return hashes, colours


def mirrored_tile_signatures(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`tile_signatures`, with the hash of each tile's mirror image (left-right flip).

    The mirror's hash comes from the tile's own DCT coefficients, those of odd
    horizontal frequency negated (what mirroring does to them), so it costs
    no second decode or transform. It is the hash :func:`tile_signatures`
    gives the mirrored tile, but cannot be derived from the tile's hash alone:
    the bits are set against the median of the 64 coefficients, which
    mirroring moves (flipping the odd horizontal frequencies' bits is off by
    0 to 14 bits, 3 on average, on CIFAR-10 photos).

    Parameters
    ----------
    tiles : numpy.ndarray
        ``(N, H, W, 3)`` uint8 (a memory map is read a chunk at a time).

    Returns
    -------
    hashes : numpy.ndarray
        ``(N,)`` uint64.
    mirrors : numpy.ndarray
        ``(N,)`` uint64: the hashes of the tiles mirrored left-right.
    colours : numpy.ndarray
        ``(N, 3)`` uint8 mean colours, rounded (a mirror's are the same).
    """
    hashes, mirrors, colours = _signatures(tiles, mirrored=True)
    assert mirrors is not None
    return hashes, mirrors, colours


#: Signs mirroring left-right gives the 8 x 8 low DCT coefficients (row-major, the
#: horizontal frequency last): ``cos(pi (2 (W - 1 - n) + 1) v / 2W) = (-1)**v cos(...)``.
_MIRROR_SIGNS = np.where(np.arange(_LOW * _LOW) % 2 == 1, -1.0, 1.0)


def _hash_bits(low: np.ndarray) -> np.ndarray:
    """The ``(n,)`` uint64 hashes of ``(n, 64)`` low DCT coefficients (see the module docstring)."""
    middle = _LOW * _LOW // 2
    # The median of the 64: the mean of the two middle ones.
    ranked = np.partition(low, (middle - 1, middle), axis=1)
    median = (ranked[:, middle - 1:middle] + ranked[:, middle:middle + 1]) / 2
    bits = low - median > _BIT_MARGIN
    packed = np.packbits(bits, axis=1, bitorder="little")
    return packed.view("<u8").ravel()


def _signatures(tiles: np.ndarray, *, mirrored: bool
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Hashes, mirrors' hashes (None unless ``mirrored``) and mean colours of ``tiles``."""
    count, height, width = tiles.shape[:3]
    rows, cols = _low_frequencies(height, width)
    hashes = np.empty(count, np.uint64)
    mirrors = np.empty(count, np.uint64) if mirrored else None
    colours = np.empty((count, 3), np.uint8)
    # Chunks of at most HASH_CHUNK tiles and about 64 MB of floats.
    step = max(1, min(HASH_CHUNK, (64 << 20) // (8 * 3 * max(1, height * width))))
    for start in range(0, count, step):
        chunk = np.asarray(tiles[start:start + step])
        size = len(chunk)
        grey = (chunk[..., 0] * _LUMA[0] + chunk[..., 1] * _LUMA[1]
                + chunk[..., 2] * _LUMA[2])
        # Two matrix products over the whole chunk: columns, then rows.
        half = (grey.reshape(size * height, width) @ cols).reshape(size, height, _LOW)
        low = (rows @ half.transpose(1, 0, 2).reshape(height, size * _LOW)).reshape(
            _LOW, size, _LOW).transpose(1, 0, 2).reshape(size, _LOW * _LOW)
        hashes[start:start + size] = _hash_bits(low)
        if mirrors is not None:
            mirrors[start:start + size] = _hash_bits(low * _MIRROR_SIGNS)
        sums = chunk.reshape(size, height * width, 3).sum(axis=1, dtype=np.int64)
        colours[start:start + size] = np.rint(sums / (height * width))
    return hashes, mirrors, colours


_BYTE_BITS = np.array([bin(value).count("1") for value in range(256)], np.uint8)


def pack_colour(colour: np.ndarray) -> int:
    """A mean colour ``(R, G, B)`` as one integer ``R << 16 | G << 8 | B`` (the manifest's)."""
    red, green, blue = (int(value) for value in colour)
    return red << 16 | green << 8 | blue


def signature(picture: np.ndarray) -> tuple[int, int]:
    """One picture's hash (unsigned) and packed mean colour (:func:`pack_colour`)."""
    hashes, colours = tile_signatures(picture[None])
    return int(hashes[0]), pack_colour(colours[0])


def hamming(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Bits that differ between two arrays of uint64 hashes, element by element."""
    return _bits_apart(np.asarray(first, np.uint64),
                       np.asarray(second, np.uint64)).astype(np.int64)


def _bits_apart(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """:func:`hamming` of uint64 arrays (broadcast), as small unsigned integers.

    Every comparison of hashes goes through here: the all-pairs walk
    (:func:`_walk_leaders`) compares a block of tiles with every kept one, and
    a copy widened to int64 would cost it a third of its time.
    """
    different = np.bitwise_xor(first, second)
    if hasattr(np, "bitwise_count"):  # NumPy 2
        return np.bitwise_count(different)
    bytes_ = np.ascontiguousarray(different).view(np.uint8).reshape(*different.shape, 8)
    return _BYTE_BITS[bytes_].sum(axis=-1, dtype=np.uint8)


def _hash_distance(hashes: np.ndarray, mirrors: np.ndarray | None, others: np.ndarray,
                   other_mirrors: np.ndarray | None) -> np.ndarray:
    """Bits apart of tiles (broadcast, as :func:`_bits_apart`), their mirror images considered.

    With the mirrors' hashes (``mirrors`` and ``other_mirrors``), the least of
    hash to hash, and of either tile's hash to the other's mirror's: a photo
    and its mirrored copy are then 0 bits apart. The same for both orders of
    a pair; the mirrors' hashes of both are not compared, being about as far
    apart as the hashes.
    """
    apart = _bits_apart(hashes, others)
    if mirrors is None or other_mirrors is None:
        return apart
    return np.minimum(apart, np.minimum(_bits_apart(hashes, other_mirrors),
                                        _bits_apart(mirrors, others)))


def _bands(bands: int) -> list[tuple[int, int]]:
    """``(shift, bits)`` of ``bands`` consecutive bit ranges covering the 64 bits."""
    base, extra = divmod(HASH_BITS, bands)
    out, shift = [], 0
    for index in range(bands):
        bits = base + (1 if index < extra else 0)
        out.append((shift, bits))
        shift += bits
    return out


def _probes(bits: int, radius: int) -> int:
    return sum(math.comb(bits, flipped) for flipped in range(radius + 1))


def _band_count(count: int, threshold: int) -> int:
    """Bands that make the probes plus the expected candidates fewest for ``count`` hashes."""
    best, best_cost = threshold + 1, math.inf
    for bands in range(1, min(threshold + 1, HASH_BITS) + 1):
        radius = threshold // bands
        bits = HASH_BITS // bands
        if bits > 26:
            continue  # a band's key table would be too large
        probes = _probes(bits, radius)
        cost = bands * probes * (1 + count / 2**bits)
        if cost < best_cost:
            best, best_cost = bands, cost
    return best


def near_pairs(
    hashes: np.ndarray, colours: np.ndarray | None, threshold: int,
    colour_tolerance: int = COLOUR_TOLERANCE, mirrors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of near-identical tiles, found without comparing all pairs.

    Parameters
    ----------
    hashes : numpy.ndarray
        ``(N,)`` uint64 perceptual hashes.
    colours : numpy.ndarray or None
        ``(N, 3)`` mean colours; None compares hashes only.
    threshold : int
        Most bits in which near-identical hashes differ (0 to 64).
    colour_tolerance : int
        Most difference of mean colour, per channel.
    mirrors : numpy.ndarray or None
        ``(N,)`` uint64 hashes of the tiles' mirror images
        (:func:`mirrored_tile_signatures`): a tile is then near another whose
        hash is near its own or its mirror's (see :func:`duplicate_leaders`).
        None compares the hashes alone.

    Returns
    -------
    first, second : numpy.ndarray
        int64 positions, ``first < second``, each pair once, sorted.

    Raises
    ------
    mosaicist.errors.OptionError
        Naming ``threshold`` (a ``ValueError``), unless it is a whole number from 0 to 64.
    """
    mirrors = _checked_mirrors(hashes, mirrors)
    found = _near_pairs_within(hashes, colours, threshold, colour_tolerance, budget=None,
                               mirrors=mirrors)
    assert found is not None  # no budget, no giving up
    return found


def _checked_mirrors(hashes: np.ndarray, mirrors: np.ndarray | None) -> np.ndarray | None:
    """``mirrors`` as uint64, else a ``ValueError`` when there is not one per hash."""
    if mirrors is None:
        return None
    mirrors = np.asarray(mirrors, np.uint64)
    if mirrors.shape != np.shape(hashes):
        raise ValueError(f"mirrors: {len(mirrors):,} hashes of mirror images for "
                         f"{len(hashes):,} tiles (one per tile is needed)")
    return mirrors


def _checked_threshold(threshold: object) -> int:
    """``threshold`` as an ``int`` of 0 to 64 bits, else :class:`~mosaicist.errors.OptionError`."""
    return int(check_range("threshold", threshold, 0, HASH_BITS, "bits", whole=True))


def _expected_candidates(count: int, threshold: int, mirrored: bool = False) -> float:
    """Candidate pairs :func:`near_pairs` checks for ``count`` random hashes (both orders).

    ``mirrored``: with their mirrors' hashes, indexed beside theirs (twice the entries).
    """
    indexed = 2 * count if mirrored else count
    bands = _band_count(indexed, threshold)
    return sum(_probes(bits, threshold // bands) * count * (1 + indexed / 2**bits)
               for _, bits in _bands(bands))


def _expected_near(count: int, threshold: int) -> float:
    """Pairs of ``count`` random hashes within ``threshold`` bits (colours left aside)."""
    within = sum(math.comb(HASH_BITS, bits) for bits in range(threshold + 1)) / 2**HASH_BITS
    return count * (count - 1) / 2 * within


def _near_pairs_within(
    hashes: np.ndarray, colours: np.ndarray | None, threshold: int,
    colour_tolerance: int = COLOUR_TOLERANCE, *, budget: float | None,
    pair_budget: float | None = None, mirrors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`near_pairs`, or None as soon as it would check more than ``budget`` candidates.

    The candidates of a probe are counted before they are expanded, so giving
    up costs the probes made so far, never the pairs of a dense cluster. It
    also gives up once it holds more than ``pair_budget`` near pairs (counted
    a chunk of :data:`PAIR_CHUNK` candidates at a time): at loose thresholds
    the candidates of random hashes, and so ``budget``, grow with the count
    squared, and a dense cluster would fill memory with its pairs first.

    With ``mirrors``, the band index holds the mirrors' hashes beside the
    hashes, and is probed by the hashes: a pair near through one tile's
    mirror is found from the other tile's side only.
    """
    hashes = np.asarray(hashes, np.uint64)
    count = len(hashes)
    threshold = _checked_threshold(threshold)
    found_first: list[np.ndarray] = []
    found_second: list[np.ndarray] = []
    spent = 0
    held = 0
    if count >= 2:
        probes = None
        if colours is not None:
            probes = _colour_probes(colours, colour_tolerance, _expected_candidates(
                count, threshold, mirrors is not None) / _COLOUR_CANDIDATE_COST)
        # The band index of the hashes and the mirrors' hashes, when that is probed:
        # positions past ``count`` are the mirrors'.
        entries = None
        if probes is not None:
            listed: _Probes = iter(probes)
        elif mirrors is None:
            listed = _band_probes(hashes, threshold)
        else:
            entries = np.concatenate([hashes, mirrors])
            listed = _kept_band_probes(hashes, entries, threshold)
        for queries, starts, ends, order in listed:
            if budget is not None:
                spent += int((ends - starts).sum())
                if spent > budget:
                    return None
            for first, second in _expand(queries, starts, ends, order):
                if entries is not None:
                    # Each near pair is found through the entry, hash or mirror's, that
                    # is near the query's hash: that one comparison decides it. A pair
                    # through a mirror is found from one side: taken in order.
                    near = _bits_apart(hashes[first], entries[second]) <= threshold
                    first, second = first[near], second[near] % count
                    first, second = np.minimum(first, second), np.maximum(first, second)
                elif mirrors is not None:  # the colour index: every pair, both ways
                    near = _hash_distance(hashes[first], mirrors[first], hashes[second],
                                          mirrors[second]) <= threshold
                    first, second = first[near], second[near]
                keep = first < second
                first, second = first[keep], second[keep]
                close = (np.ones(len(first), bool) if mirrors is not None
                         else hamming(hashes[first], hashes[second]) <= threshold)
                if colours is not None:
                    difference = np.abs(colours[first].astype(np.int16)
                                        - colours[second].astype(np.int16))
                    close &= difference.max(axis=1) <= colour_tolerance
                found_first.append(first[close])
                found_second.append(second[close])
                if pair_budget is not None:
                    held += len(found_first[-1])
                    if held > pair_budget:
                        return None
    if not found_first:
        empty = np.zeros(0, np.int64)
        return empty, empty.copy()
    pair_keys = np.unique(np.concatenate(found_first) * count + np.concatenate(found_second))
    return pair_keys // count, pair_keys % count


#: The probes of an index: the positions of the queries that hit, the run of entries
#: each one matches (``order[starts:ends]``), and the index's positions in key order.
_Probes = Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def _band_probes(hashes: np.ndarray, threshold: int) -> _Probes:
    """The band index's probes (see the module docstring): every pair within ``threshold``."""
    count = len(hashes)
    bands = _band_count(count, threshold)
    radius = threshold // bands
    for shift, bits in _bands(bands):
        keys = (hashes >> np.uint64(shift)) & np.uint64((1 << bits) - 1)
        order = np.argsort(keys, kind="stable")
        # Queries in key order: the probes of neighbouring queries touch
        # neighbouring memory.
        sorted_keys = keys[order]
        # Start of each key's run in ``order``: a table when it fits and its
        # ``2**bits`` entries cost less than searching for every probe (a table of
        # 4 million entries, at --dedupe 2, took a tenth of a second for two tiles).
        table = None
        if bits <= 24 and 1 << bits <= 4 * count * _probes(bits, radius):
            table = np.searchsorted(sorted_keys, np.arange((1 << bits) + 1, dtype=np.uint64))
        for flipped in range(radius + 1):
            for chosen in itertools.combinations(range(bits), flipped):
                probe = sorted_keys ^ np.uint64(sum(1 << bit for bit in chosen))
                if table is not None:
                    index = probe.astype(np.int64)
                    starts, ends = table[index], table[index + 1]
                else:
                    starts = np.searchsorted(sorted_keys, probe, "left")
                    ends = np.searchsorted(sorted_keys, probe, "right")
                hit = np.flatnonzero(ends > starts)
                yield order[hit], starts[hit], ends[hit], order


def _colour_probes(colours: np.ndarray, tolerance: int, most: float
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None:
    """Probes of an index of mean colours, when they give fewer candidates than the bands.

    Colours within ``tolerance`` in every channel lie in the same or
    neighbouring cubes of side ``tolerance + 1``, so probing a tile's cube and
    its 26 neighbours finds every pair near in colour (and so every near pair).
    At loose thresholds the band index's probes match most tiles (at 64 bits
    every pair: 20,000 photos took two and a half minutes), where mean colours
    still tell most photos apart.

    Returns
    -------
    list or None
        The probes (as :func:`_band_probes` yields them), or None when they
        would give at least ``most`` candidates, and the band index should be
        used.
    """
    side = int(tolerance) + 1
    across = 256 // side + 3
    keys = _colour_cubes(colours, side)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    probes = []
    candidates = 0
    for step in itertools.product((-1, 0, 1), repeat=3):
        probe = sorted_keys + (step[0] * across + step[1]) * across + step[2]
        starts = np.searchsorted(sorted_keys, probe, "left")
        ends = np.searchsorted(sorted_keys, probe, "right")
        hit = np.flatnonzero(ends > starts)
        candidates += int((ends[hit] - starts[hit]).sum())
        if candidates >= most:
            return None
        probes.append((order[hit], starts[hit], ends[hit], order))
    return probes


def _first_near(
    hashes: np.ndarray, colours: np.ndarray | None, kept: np.ndarray,
    kept_colours: np.ndarray | None, threshold: int,
    mirrors: np.ndarray | None = None, kept_mirrors: np.ndarray | None = None,
) -> np.ndarray:
    """For each of ``hashes``, the first of ``kept`` near-identical to it, or -1.

    The band index of :func:`near_pairs` over ``kept`` alone, probed by
    ``hashes``: the work follows the kept tiles each one is near, however
    alike ``hashes`` are among themselves. Where the hashes are alike but
    the mean colours are not (flat pictures of many colours hash as one: a
    library of colour swatches), the bands would pair every tile with every
    kept one; the kept tiles' mean colours are indexed instead
    (:func:`_kept_colour_probes`) as soon as the bands' candidates pass
    theirs (50,000 swatches: 29 s of checks). Where both would check more
    candidates than comparing every tile with every kept one costs (loose
    thresholds on tiles alike in colour: the bands' candidates are nearly
    every pair, once per band), that is done instead (:func:`_first_near_direct`).

    With the mirrors' hashes of both (``mirrors``, ``kept_mirrors``), near as
    :func:`_hash_distance` says: the bands of the kept hashes and their
    mirrors' are probed by the hashes, and those of the kept hashes by the
    mirrors'.
    """
    first = np.full(len(hashes), -1, np.int64)
    if not len(hashes) or not len(kept):
        return first
    direct_budget = len(hashes) * len(kept) / _CANDIDATE_PAIRS
    best = np.full(len(hashes), len(kept), np.int64)

    def check(probes: _Probes, budget: float | None = None) -> bool:
        """Lower ``best`` by the near pairs among ``probes``; False when past ``budget``."""
        spent = 0
        for queries, starts, ends, order in probes:
            if budget is not None:
                spent += int((ends - starts).sum())
                if spent > budget:
                    return False
            for query, match in _expand(queries, starts, ends, order):
                close = _hash_distance(
                    hashes[query], None if mirrors is None else mirrors[query], kept[match],
                    None if kept_mirrors is None else kept_mirrors[match]) <= threshold
                if colours is not None and kept_colours is not None:
                    difference = np.abs(colours[query].astype(np.int16)
                                        - kept_colours[match].astype(np.int16))
                    close &= difference.max(axis=1) <= COLOUR_TOLERANCE
                np.minimum.at(best, query[close], match[close])
        return True

    if mirrors is None or kept_mirrors is None:
        mirrors = kept_mirrors = None
        bands = _kept_band_probes(hashes, kept, threshold)
    else:
        bands = itertools.chain(_kept_mirror_band_probes(hashes, kept, kept_mirrors, threshold),
                                _kept_band_probes(mirrors, kept, threshold))
    if colours is None or kept_colours is None:
        if not check(bands, direct_budget):
            return _first_near_direct(hashes, None, kept, None, threshold, mirrors,
                                      kept_mirrors)
    else:
        by_colour = _kept_colour_probes(colours, kept_colours, COLOUR_TOLERANCE)
        by_colour_candidates = sum(int((ends - starts).sum()) for _, starts, ends, _ in by_colour)
        # What ``best`` got from the bands before they gave up stays: it is a minimum
        # over near pairs, and the colour index finds every near pair again.
        if not check(bands, min(direct_budget, _COLOUR_CANDIDATE_COST * by_colour_candidates
                                + _BUDGET_FLOOR * len(hashes))):
            if by_colour_candidates > direct_budget:
                return _first_near_direct(hashes, colours, kept, kept_colours, threshold,
                                          mirrors, kept_mirrors)
            check(iter(by_colour))
    found = best < len(kept)
    first[found] = best[found]
    return first


def _kept_band_probes(hashes: np.ndarray, kept: np.ndarray, threshold: int) -> _Probes:
    """Probes of the band index of ``kept`` by ``hashes`` (see :func:`_first_near`)."""
    bands = _band_count(max(len(hashes), len(kept)), threshold)
    radius = threshold // bands
    queries = np.arange(len(hashes), dtype=np.int64)
    for shift, bits in _bands(bands):
        mask = np.uint64((1 << bits) - 1)
        kept_keys = (kept >> np.uint64(shift)) & mask
        order = np.argsort(kept_keys, kind="stable")
        sorted_keys = kept_keys[order]
        keys = (hashes >> np.uint64(shift)) & mask
        for flipped in range(radius + 1):
            for chosen in itertools.combinations(range(bits), flipped):
                probe = keys ^ np.uint64(sum(1 << bit for bit in chosen))
                starts = np.searchsorted(sorted_keys, probe, "left")
                ends = np.searchsorted(sorted_keys, probe, "right")
                hit = np.flatnonzero(ends > starts)
                yield queries[hit], starts[hit], ends[hit], order


def _kept_mirror_band_probes(hashes: np.ndarray, kept: np.ndarray, kept_mirrors: np.ndarray,
                             threshold: int) -> _Probes:
    """Probes of the band index of ``kept`` and ``kept_mirrors`` by ``hashes``.

    An entry of ``kept_mirrors`` stands for its kept tile's position.
    """
    last_order, positions = None, None
    for queries, starts, ends, order in _kept_band_probes(
            hashes, np.concatenate([kept, kept_mirrors]), threshold):
        if order is not last_order:  # one per band
            last_order, positions = order, order % len(kept)
        assert positions is not None
        yield queries, starts, ends, positions


def _colour_cubes(colours: np.ndarray, side: int) -> np.ndarray:
    """Each colour's cube of side ``side``, as one key (see :func:`_colour_probes`)."""
    # Cube coordinates from 1, so that a neighbour's (one less or more) never wraps.
    cubes = np.asarray(colours, np.int64) // side + 1
    across = 256 // side + 3
    return (cubes[:, 0] * across + cubes[:, 1]) * across + cubes[:, 2]


def _kept_colour_probes(
    colours: np.ndarray, kept_colours: np.ndarray, tolerance: int,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Probes of an index of ``kept_colours`` by ``colours``: every pair near in colour.

    As :func:`_colour_probes`, between two sets: each colour's cube and its
    26 neighbours.
    """
    side = int(tolerance) + 1
    across = 256 // side + 3
    kept_keys = _colour_cubes(kept_colours, side)
    order = np.argsort(kept_keys, kind="stable")
    sorted_keys = kept_keys[order]
    keys = _colour_cubes(colours, side)
    queries = np.arange(len(colours), dtype=np.int64)
    probes = []
    for step in itertools.product((-1, 0, 1), repeat=3):
        probe = keys + (step[0] * across + step[1]) * across + step[2]
        starts = np.searchsorted(sorted_keys, probe, "left")
        ends = np.searchsorted(sorted_keys, probe, "right")
        hit = np.flatnonzero(ends > starts)
        probes.append((queries[hit], starts[hit], ends[hit], order))
    return probes


def _near_matrix(
    hashes: np.ndarray, colours: np.ndarray | None, kept: np.ndarray,
    kept_colours: np.ndarray | None, threshold: int,
    mirrors: np.ndarray | None = None, kept_mirrors: np.ndarray | None = None,
) -> np.ndarray:
    """``(len(hashes), len(kept))`` booleans: which tiles are near-identical to which kept ones.

    ``colours`` are ``(n, 3)`` and ``kept_colours`` ``(3, k)``, both int16 (no
    copy per pair); None compares hashes only. ``mirrors`` and
    ``kept_mirrors``: their mirror images' hashes (:func:`_hash_distance`), or None.
    """
    near = _hash_distance(hashes[:, None], None if mirrors is None else mirrors[:, None],
                          kept[None, :],
                          None if kept_mirrors is None else kept_mirrors[None, :]) <= threshold
    if colours is None or kept_colours is None:
        return near
    # A 1-D search: np.nonzero of the 2-D array took twice as long as the comparisons.
    rows, columns = np.divmod(np.flatnonzero(near), near.shape[1])
    if len(rows) * 8 < near.size:
        # Few pairs near in hash (as between distinct photos): only theirs are checked.
        apart = np.abs(colours[rows] - kept_colours[:, columns].T).max(axis=1) > COLOUR_TOLERANCE
        near[rows[apart], columns[apart]] = False
        return near
    for channel in range(3):
        difference = colours[:, channel, None] - kept_colours[channel][None, :]
        np.abs(difference, out=difference)
        near &= difference <= COLOUR_TOLERANCE
    return near


def _first_near_direct(
    hashes: np.ndarray, colours: np.ndarray | None, kept: np.ndarray,
    kept_colours: np.ndarray | None, threshold: int,
    mirrors: np.ndarray | None = None, kept_mirrors: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`_first_near` by comparing each tile with the kept ones in order, a block at a time.

    ``colours`` and ``kept_colours`` as :func:`_first_near`'s (``(n, 3)``,
    ``(k, 3)``). A tile stops being compared after the block of kept tiles
    where it meets its first near one, so the work is at most
    ``len(hashes) * len(kept)`` pairs, and far fewer where the first kept
    tiles take most (loose thresholds).
    """
    first = np.full(len(hashes), -1, np.int64)
    wide = None if colours is None else np.asarray(colours, np.int16)
    kept_wide = None if kept_colours is None else np.ascontiguousarray(
        np.asarray(kept_colours, np.int16).T)
    for start in range(0, len(hashes), _WALK_BLOCK):
        rows = np.arange(start, min(start + _WALK_BLOCK, len(hashes)))
        for kept_start in range(0, len(kept), _WALK_KEPT_BLOCK):
            kept_end = kept_start + _WALK_KEPT_BLOCK
            near = _near_matrix(hashes[rows], None if wide is None else wide[rows],
                                kept[kept_start:kept_end],
                                None if kept_wide is None else kept_wide[:, kept_start:kept_end],
                                threshold, None if mirrors is None else mirrors[rows],
                                None if kept_mirrors is None
                                else kept_mirrors[kept_start:kept_end])
            hit = near.any(axis=1)
            first[rows[hit]] = kept_start + near[hit].argmax(axis=1)
            rows = rows[~hit]
            if not len(rows):
                break
    return first


def _walk_leaders(hashes: np.ndarray, colours: np.ndarray | None,
                  threshold: int, mirrors: np.ndarray | None = None) -> np.ndarray:
    """Each tile's leader by the documented walk, comparing tiles with the kept ones.

    A block of tiles at a time: each is compared with the tiles kept so far, in
    order, until the first near one (:func:`_first_near_direct`); those near
    none are compared among themselves and walked in order. A pair of tiles
    of two blocks is compared at most once, and only where the first one was
    kept; the tiles of one block that no kept tile took are compared both
    ways. So the work is at most all pairs plus half a block per tile, and
    about the tiles times the kept ones. That is the way at loose thresholds,
    where random hashes are near by the hundreds of thousands and the band
    index's candidates are nearly every pair, once per band (the kept tiles
    are few then: photos of one mean colour at 64 bits keep one).
    """
    count = len(hashes)
    leaders = np.arange(count, dtype=np.int64)
    wide = None if colours is None else np.asarray(colours, np.int16)
    # The kept tiles so far, in library order, and their colours by channel.
    kept = np.zeros(count, np.int64)
    kept_wide = None if wide is None else np.zeros((3, count), np.int16)
    held = 0
    for start in range(0, count, _WALK_BLOCK):
        block = np.arange(start, min(start + _WALK_BLOCK, count))
        first = _first_near_direct(hashes[block], None if wide is None else wide[block],
                                   hashes[kept[:held]],
                                   None if kept_wide is None else kept_wide[:, :held].T,
                                   threshold, None if mirrors is None else mirrors[block],
                                   None if mirrors is None else mirrors[kept[:held]])
        leaders[block] = np.where(first >= 0, kept[np.maximum(first, 0)], block)
        rest = block[first < 0]
        if not len(rest):
            continue
        rest_wide = None if wide is None else wide[rest]
        rest_mirrors = None if mirrors is None else mirrors[rest]
        # Which of them are near a later one of them: only those are walked one by one.
        later = np.triu(_near_matrix(hashes[rest], rest_wide, hashes[rest],
                                     None if rest_wide is None else rest_wide.T, threshold,
                                     rest_mirrors, rest_mirrors), 1)
        dropped = np.zeros(len(rest), bool)
        for index in np.flatnonzero(later.any(axis=1)).tolist():
            if not dropped[index]:
                newly = later[index] & ~dropped
                dropped |= newly
                leaders[rest[newly]] = rest[index]
        newly_kept = rest[~dropped]
        kept[held:held + len(newly_kept)] = newly_kept
        if kept_wide is not None and wide is not None:
            kept_wide[:, held:held + len(newly_kept)] = wide[newly_kept].T
        held += len(newly_kept)
    return leaders


def _walk_is_cheaper(hashes: np.ndarray, colours: np.ndarray | None, threshold: int,
                     mirrors: np.ndarray | None = None) -> bool:
    """Whether listing the pairs would cost more than walking the tiles at their worst.

    The walk (:func:`_walk_leaders`) compares about ``count * (count - 1) / 2``
    pairs at most. The listing checks the band index's candidates (as many as
    random hashes give, counted in both orders, each costing about
    :data:`_CANDIDATE_PAIRS` compared pairs) or, where fewer, the colour
    index's (counted here). The walk is taken where the listing's would cost
    at least twice the walk's most: on photos alike in colour at loose
    thresholds, where it compares few pairs (the tiles kept are few).
    With ``mirrors`` both compare three pairs of hashes per pair of tiles,
    and the band index has twice the entries.
    """
    count = len(hashes)
    ordered_pairs = count * (count - 1)
    if (_CANDIDATE_PAIRS * _expected_candidates(count, threshold, mirrors is not None)
            < ordered_pairs):
        return False
    # Mean colours that tell most tiles apart keep the listing cheap at any threshold.
    return colours is None or _colour_probes(
        colours, COLOUR_TOLERANCE,
        ordered_pairs / (_CANDIDATE_PAIRS * _COLOUR_CANDIDATE_COST)) is None


def _greedy_leaders(hashes: np.ndarray, colours: np.ndarray | None,
                    threshold: int, mirrors: np.ndarray | None = None) -> np.ndarray:
    """Each tile's leader (:func:`leaders_from_pairs`), without listing every pair of a cluster.

    Where the pairs are few (as between distinct photos) they are listed at
    once. Where they would be many (the near-identical frames of a still
    scene: hashes a few unstable bits apart, every pair near, their count
    squared), the first half is solved, the second half's tiles near one it
    kept go with the first such, and only the rest are solved among
    themselves: the kept tiles of a cluster are few, so the work stays about
    linear in the tiles. Where listing the pairs of random hashes would
    already cost more than comparing all pairs (loose thresholds, or few
    tiles), the tiles are walked instead (:func:`_walk_leaders`): the band
    index's candidates are then nearly every pair once per band, and a
    library of one mean colour at 64 bits listed all of them (2,000 tiles:
    8 s; 50,000: past ten minutes). ``mirrors``: as :func:`duplicate_leaders`'s.
    """
    count = len(hashes)
    small = count <= _SPLIT_BELOW
    # Mirrors passed positionally, and to the walk only when given: tests stand in for
    # these with functions of any, or of the first three, arguments.
    if not small and _walk_is_cheaper(hashes, colours, threshold, mirrors):
        return _walk_leaders(hashes, colours, threshold, *([] if mirrors is None else [mirrors]))
    mirrored = mirrors is not None
    budget = (_BUDGET_FACTOR * _expected_candidates(count, threshold, mirrored)
              + _BUDGET_FLOOR * count)
    # Near through a mirror too: up to three times the near pairs of random hashes.
    pair_budget = (_BUDGET_FACTOR * (3 if mirrored else 1) * _expected_near(count, threshold)
                   + _BUDGET_FLOOR * count)
    found = _near_pairs_within(hashes, colours, threshold, budget=None if small else budget,
                               pair_budget=None if small else pair_budget, mirrors=mirrors)
    if found is not None:
        return leaders_from_pairs(count, *found)

    def part(positions: np.ndarray | slice, of: np.ndarray | None) -> np.ndarray | None:
        return None if of is None else of[positions]

    half = count // 2
    leaders = np.empty(count, np.int64)
    first_half = slice(None, half)
    leaders[:half] = _greedy_leaders(hashes[:half], part(first_half, colours), threshold,
                                     part(first_half, mirrors))
    kept = np.flatnonzero(leaders[:half] == np.arange(half))
    second_half = slice(half, None)
    near = _first_near(hashes[half:], part(second_half, colours), hashes[kept],
                       part(kept, colours), threshold, part(second_half, mirrors),
                       part(kept, mirrors))
    later = leaders[half:]
    later[near >= 0] = kept[near[near >= 0]]
    rest = half + np.flatnonzero(near < 0)
    leaders[rest] = rest[_greedy_leaders(hashes[rest], part(rest, colours), threshold,
                                         part(rest, mirrors))]
    return leaders


def _expand(
    positions: np.ndarray, starts: np.ndarray, ends: np.ndarray, order: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(query, match)`` arrays: each query with every entry of its run, in chunks."""
    counts = ends - starts
    totals = np.cumsum(counts)
    begin = 0
    while begin < len(positions):
        done = totals[begin - 1] if begin else 0
        # Queries whose matches fit in one chunk (at least one query).
        end = max(begin + 1, int(np.searchsorted(totals, done + PAIR_CHUNK, "right")))
        chunk_counts = counts[begin:end]
        size = int(chunk_counts.sum())
        if size:
            queries = np.repeat(positions[begin:end], chunk_counts)
            offsets = np.arange(size) - np.repeat(np.cumsum(chunk_counts) - chunk_counts,
                                                  chunk_counts)
            matches = order[np.repeat(starts[begin:end], chunk_counts) + offsets]
            yield queries, matches
        begin = end


def leaders_from_pairs(count: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Each tile's leader, given the near-identical pairs (see the module docstring).

    Parameters
    ----------
    count : int
        Number of tiles.
    first, second : numpy.ndarray
        Pairs of positions, ``first < second``.

    Returns
    -------
    numpy.ndarray
        ``(count,)`` int64: a kept tile is its own leader; a dropped one has
        the first kept tile it is near-identical to.
    """
    leaders = np.arange(count, dtype=np.int64)
    if not len(first):
        return leaders
    order = np.lexsort((second, first))
    first, second = first[order], second[order]
    starts = np.searchsorted(first, np.arange(count + 1))
    dropped = np.zeros(count, bool)
    for position in np.unique(first).tolist():
        if dropped[position]:
            continue
        later = second[starts[position]:starts[position + 1]]
        newly = later[~dropped[later]]
        dropped[newly] = True
        leaders[newly] = position
    return leaders


def duplicate_leaders(hashes: np.ndarray, colours: np.ndarray | None,
                      threshold: int, mirrors: np.ndarray | None = None) -> np.ndarray:
    """Each tile's leader: itself when kept, else the earlier kept tile it duplicates.

    Tiles of one signature (the same hash and mean colour: copies of one
    photo, or the flat frames of a video's fades to black) are near-identical
    to each other at every threshold, so only the first of them can be kept,
    and every other one has the leader the first one has (itself when kept).
    Only those first ones are compared: :func:`near_pairs` lists every pair
    of a group, so a library of thousands of copies of one picture took
    minutes and gigabytes (its size squared) for nothing.

    Parameters
    ----------
    hashes : numpy.ndarray
        ``(N,)`` uint64 perceptual hashes.
    colours : numpy.ndarray or None
        ``(N, 3)`` mean colours; None compares hashes only.
    threshold : int
        Most bits in which near-identical hashes differ (0 to 64).
    mirrors : numpy.ndarray or None
        ``(N,)`` uint64 hashes of the tiles' mirror images (left-right flips:
        :func:`mirrored_tile_signatures`). Two tiles are then also near-identical
        when one's hash is within ``threshold`` of the other's mirror's (and
        their mean colours, which mirroring keeps, are near): a photo and its
        mirrored copy are one photo twice. None compares the hashes alone.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64 positions (see :func:`leaders_from_pairs`).

    Raises
    ------
    mosaicist.errors.OptionError
        Naming ``threshold`` (a ``ValueError``), unless it is a whole number from 0 to 64,
        whatever the number of tiles.
    ValueError
        Naming ``mirrors``, when there is not one per hash.
    """
    # Checked before anything else: a negative one divided by zero choosing the bands,
    # and any bad value passed unnoticed for a library of fewer than two tiles.
    threshold = _checked_threshold(threshold)
    hashes = np.asarray(hashes, np.uint64)
    mirrors = _checked_mirrors(hashes, mirrors)
    count = len(hashes)
    if count < 2:
        return np.arange(count, dtype=np.int64)
    # A tile's mirror is part of its signature: two tiles of one hash may mirror to two
    # (the hash is not all of the picture), and an earlier tile be near one mirror only.
    columns = [hashes] if mirrors is None else [hashes, mirrors]
    if colours is not None:
        colours = np.asarray(colours)
        columns.append((colours[:, 0].astype(np.uint64) << np.uint64(16))
                       | (colours[:, 1].astype(np.uint64) << np.uint64(8))
                       | colours[:, 2].astype(np.uint64))
    signatures = np.stack(columns, axis=1)
    _, first_of, group_of = np.unique(signatures, axis=0, return_index=True,
                                      return_inverse=True)
    group_of = group_of.reshape(-1)  # NumPy 2.0.0 gave it the input's shape
    # The first tile of each signature, in library order, and each group's rank among them.
    firsts = np.sort(first_of)
    rank = np.empty(len(first_of), np.int64)
    rank[np.argsort(first_of)] = np.arange(len(first_of))
    reduced = _greedy_leaders(hashes[firsts], None if colours is None else colours[firsts],
                              threshold, None if mirrors is None else mirrors[firsts])
    return firsts[reduced[rank[group_of]]].astype(np.int64)


#: Most bytes of tiles compared at a time while grouping identical ones.
IDENTICAL_CHUNK_BYTES = 64 << 20


def identical_leaders(hashes: np.ndarray, colours: np.ndarray, tiles: np.ndarray
                      ) -> np.ndarray:
    """Each tile's leader among identical tiles: the first tile of its very pixels.

    Two tiles are identical when their pixels are equal byte for byte: the
    same picture twice (a photo copied into two folders, exported twice, a
    video's black frames). Such tiles also have one signature, the hash and
    mean colour being computed from the same pixels, so only the tiles that
    share a signature with another are read and compared; a library without
    copies reads no pixels. Unlike near-duplicates (:func:`duplicate_leaders`)
    there is no threshold: a photo is never taken for another one that
    differs from it in a single value.

    Parameters
    ----------
    hashes : numpy.ndarray
        ``(N,)`` uint64 perceptual hashes (:func:`tile_signatures`).
    colours : numpy.ndarray
        ``(N, 3)`` mean colours.
    tiles : numpy.ndarray
        ``(N, ...)`` uint8 tiles (a memory map is read a chunk at a time).

    Returns
    -------
    numpy.ndarray
        ``(N,)`` int64 positions: a tile's own where no earlier tile has its
        pixels, else the first tile that has them.
    """
    hashes = np.asarray(hashes, np.uint64)
    colours = np.asarray(colours)
    count = len(hashes)
    if len(colours) != count or len(tiles) != count:
        raise ValueError(f"hashes, colours and tiles must be one per tile: {count}, "
                         f"{len(colours)} and {len(tiles)}")
    leaders = np.arange(count, dtype=np.int64)
    if count < 2:
        return leaders
    colour = ((colours[:, 0].astype(np.uint64) << np.uint64(16))
              | (colours[:, 1].astype(np.uint64) << np.uint64(8))
              | colours[:, 2].astype(np.uint64))
    # Tiles of one signature side by side, in library order within it.
    order = np.lexsort((leaders, colour, hashes))
    key_hash, key_colour = hashes[order], colour[order]
    starts = np.flatnonzero(np.concatenate(
        ([True], (key_hash[1:] != key_hash[:-1]) | (key_colour[1:] != key_colour[:-1]))))
    sizes = np.diff(np.append(starts, count))
    shared = sizes > 1
    if not shared.any():
        return leaders
    tile_bytes = max(1, math.prod(tiles.shape[1:]))
    per_chunk = max(1, IDENTICAL_CHUNK_BYTES // tile_bytes)
    group_starts, group_sizes = starts[shared], sizes[shared]
    # Whole groups per chunk (a group larger than a chunk is one chunk of its own).
    ends = np.cumsum(group_sizes)
    first = 0
    while first < len(group_starts):
        last = int(np.searchsorted(ends, ends[first] - group_sizes[first] + per_chunk,
                                   side="right"))
        last = max(last, first + 1)
        members = np.concatenate([order[start:start + size] for start, size in
                                  zip(group_starts[first:last].tolist(),
                                      group_sizes[first:last].tolist(), strict=True)])
        group = np.repeat(np.arange(last - first), group_sizes[first:last])
        _first_of_pixels(members, group, tiles, leaders)
        first = last
    return leaders


def _first_of_pixels(members: np.ndarray, group: np.ndarray, tiles: np.ndarray,
                     leaders: np.ndarray) -> None:
    """Point each of ``members`` (groups of one signature, each in library order) at the
    first member of its group with its very pixels, in ``leaders``."""
    # Read in position order (a memory map reads forward), then back in members' order.
    reading = np.argsort(members, kind="stable")
    rows = np.empty((len(members), max(1, math.prod(tiles.shape[1:]))), np.uint8)
    rows[reading] = np.asarray(tiles[members[reading]]).reshape(len(members), -1)
    # The group's number before the pixels: equal rows of two signatures stay apart.
    keyed = np.concatenate([group.astype(">u8").view(np.uint8).reshape(-1, 8), rows], axis=1)
    keys = np.ascontiguousarray(keyed).view(np.dtype((np.void, keyed.shape[1]))).reshape(-1)
    # A stable sort of the keys keeps each group's library order among equal pixels: the
    # first of each run is the leader.
    sort = np.argsort(keys, kind="stable")
    ordered = keys[sort]
    new_run = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    run_head = sort[np.flatnonzero(new_run)][np.cumsum(new_run) - 1]
    leaders[members[sort]] = members[run_head]


def duplicate_groups(leaders: np.ndarray) -> list[np.ndarray]:
    """The groups with duplicates: each the leader's position, then its duplicates', in order."""
    leaders = np.asarray(leaders, np.int64)
    members = np.flatnonzero(leaders != np.arange(len(leaders)))
    if not len(members):
        return []
    order = np.lexsort((members, leaders[members]))
    members = members[order]
    heads, starts = np.unique(leaders[members], return_index=True)
    parts = np.split(members, starts[1:])
    return [np.concatenate([[head], part]) for head, part in zip(heads.tolist(), parts,
                                                                 strict=True)]
