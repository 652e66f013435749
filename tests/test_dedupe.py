"""Near-duplicates: signatures, the band index against brute force, the library without them."""

from __future__ import annotations

import io
import json
import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import noisy_target
from PIL import Image

from mosaicist import dedupe as dedupe_module
from mosaicist.cli import main
from mosaicist.dedupe import (
    COLOUR_TOLERANCE,
    DEFAULT_THRESHOLD,
    duplicate_groups,
    duplicate_leaders,
    hamming,
    leaders_from_pairs,
    near_pairs,
    tile_signatures,
)
from mosaicist.library import TileLibrary
from mosaicist.pipeline import make_mosaic
from mosaicist.sources.folder import FolderSource


def planted_hashes(rng, count):
    """Random hashes, a third of them a few bits from another, some equal."""
    base = rng.integers(0, 2**63, count, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    base |= rng.integers(0, 2, count).astype(np.uint64)
    near = base.copy()
    for index in range(0, count, 3):
        for bit in rng.choice(64, rng.integers(0, 9), replace=False):
            near[index] ^= np.uint64(1) << np.uint64(int(bit))
    hashes = np.concatenate([base, near[::3], base[:5]])
    rng.shuffle(hashes)
    return hashes


def brute_pairs(hashes, colours, threshold):
    first, second = np.triu_indices(len(hashes), 1)
    close = hamming(hashes[first], hashes[second]) <= threshold
    if colours is not None:
        apart = np.abs(colours[first].astype(int) - colours[second].astype(int)).max(axis=1)
        close &= apart <= COLOUR_TOLERANCE
    return set(zip(first[close].tolist(), second[close].tolist(), strict=True))


def brute_leaders(hashes, colours, threshold):
    """The definition: in library order, dropped when near an earlier kept tile."""
    pairs = brute_pairs(hashes, colours, threshold)
    leaders = np.arange(len(hashes))
    kept: list[int] = []
    for position in range(len(hashes)):
        for earlier in kept:
            if (earlier, position) in pairs:
                leaders[position] = earlier
                break
        else:
            kept.append(position)
    return leaders


@pytest.mark.parametrize("threshold", [0, 1, 3, 6, 10, 21])
def test_band_index_finds_exactly_the_brute_force_pairs(threshold):
    rng = np.random.default_rng(threshold)
    hashes = planted_hashes(rng, 600)
    colours = rng.integers(0, 3 * COLOUR_TOLERANCE, (len(hashes), 3)).astype(np.uint8)
    for given in (None, colours):
        first, second = near_pairs(hashes, given, threshold)
        assert (first < second).all()
        assert set(zip(first.tolist(), second.tolist(), strict=True)) == brute_pairs(
            hashes, given, threshold)
    leaders = duplicate_leaders(hashes, colours, threshold)
    np.testing.assert_array_equal(leaders, brute_leaders(hashes, colours, threshold))


def test_every_band_split_is_exact(monkeypatch):
    rng = np.random.default_rng(7)
    hashes = planted_hashes(rng, 300)
    expected = brute_pairs(hashes, None, 2)
    for bands in (1, 2, 3):  # from one 64-bit key to the plain pigeonhole split
        monkeypatch.setattr(dedupe_module, "_band_count", lambda count, threshold, b=bands: b)
        monkeypatch.setattr(dedupe_module, "PAIR_CHUNK", 50)  # many expansion chunks
        first, second = near_pairs(hashes, None, 2)
        assert set(zip(first.tolist(), second.tolist(), strict=True)) == expected, bands
    with pytest.raises(ValueError, match="threshold"):
        near_pairs(hashes, None, 65)
    assert len(near_pairs(hashes[:1], None, 6)[0]) == 0



@pytest.mark.parametrize("threshold", [0, 6])
def test_copies_of_one_picture_are_compared_once(threshold, monkeypatch):
    # Every pair of a group of equal signatures was listed: 6,000 all-black tiles took
    # 36 s and 3 GB (their count squared), and tens of thousands ran out of memory.
    rng = np.random.default_rng(threshold)
    distinct = planted_hashes(rng, 60)
    hashes = np.concatenate([distinct, np.repeat(distinct[:4], 30), np.zeros(40, np.uint64)])
    colours = rng.integers(0, 3 * COLOUR_TOLERANCE, (len(hashes), 3)).astype(np.uint8)
    colours[len(distinct):len(distinct) + 120] = np.repeat(colours[:4], 30, axis=0)
    colours[-40:] = (0, 0, 0)
    order = rng.permutation(len(hashes))
    hashes, colours = hashes[order], colours[order]
    compared = []
    real_pairs = dedupe_module._near_pairs_within

    def counted_pairs(some_hashes, some_colours, some_threshold, **budget):
        compared.append(len(some_hashes))
        return real_pairs(some_hashes, some_colours, some_threshold, **budget)

    monkeypatch.setattr(dedupe_module, "_near_pairs_within", counted_pairs)
    real_walk = dedupe_module._walk_leaders

    def counted_walk(some_hashes, some_colours, some_threshold):
        compared.append(len(some_hashes))
        return real_walk(some_hashes, some_colours, some_threshold)

    monkeypatch.setattr(dedupe_module, "_walk_leaders", counted_walk)
    for given in (colours, None):
        leaders = duplicate_leaders(hashes, given, threshold)
        np.testing.assert_array_equal(leaders, brute_leaders(hashes, given, threshold))
    assert max(compared) <= len(distinct) + 1 + 3  # each signature once
    big = duplicate_leaders(np.zeros(200_000, np.uint64), np.zeros((200_000, 3), np.uint8), 6)
    assert (big == 0).all()
    assert len(duplicate_leaders(hashes[:1], colours[:1], threshold)) == 1
    assert len(duplicate_leaders(hashes[:0], colours[:0], threshold)) == 0

def test_leaders_follow_library_order_not_chains():
    # 0 ~ 1 ~ 2 but 0 !~ 2: 1 goes with 0, and 2 stays (nothing kept is near it).
    leaders = leaders_from_pairs(4, np.array([0, 1, 0]), np.array([1, 2, 3]))
    np.testing.assert_array_equal(leaders, [0, 0, 2, 0])
    groups = duplicate_groups(leaders)
    assert [group.tolist() for group in groups] == [[0, 1, 3]]
    assert duplicate_groups(np.arange(3)) == []


def photos():
    """Five distinct photos that ship with scikit-image (no download)."""
    from skimage import data

    pictures = [data.astronaut(), data.chelsea(), data.camera(), data.grass(), data.coffee()]
    return [Image.fromarray(picture).convert("RGB") for picture in pictures]


def encoded(image, kind, **settings):
    data = io.BytesIO()
    image.save(data, kind, **settings)
    return data.getvalue()


def duplicates_folder(root):
    """Five distinct photos, then copies: identical, re-encoded, resized, both."""
    root.mkdir()
    originals = photos()
    for index, image in enumerate(originals):
        (root / f"a{index}.png").write_bytes(encoded(image, "PNG"))
    (root / "b0-copy.png").write_bytes((root / "a0.png").read_bytes())
    (root / "b1-jpeg.jpg").write_bytes(encoded(originals[1], "JPEG", quality=30))
    half = [image.resize((image.width // 2, image.height // 2), Image.LANCZOS)
            for image in originals]
    (root / "b2-small.png").write_bytes(encoded(half[2], "PNG"))
    (root / "b3-small.jpg").write_bytes(encoded(half[3], "JPEG", quality=40))
    # Same structure, another colour: not a copy.
    shifted = np.clip(np.asarray(originals[4]).astype(int) + 60, 0, 255).astype(np.uint8)
    (root / "c4-brighter.png").write_bytes(encoded(Image.fromarray(shifted), "PNG"))
    # Flat photos of different colours hash alike; their colours tell them apart.
    (root / "d-red.png").write_bytes(encoded(Image.new("RGB", (50, 50), (200, 30, 30)), "PNG"))
    (root / "d-blue.png").write_bytes(encoded(Image.new("RGB", (50, 50), (30, 30, 200)), "PNG"))
    return root


def test_signatures_catch_copies_and_keep_distinct_photos(tmp_path):
    folder = duplicates_folder(tmp_path / "photos")
    library = TileLibrary.open(FolderSource(folder, workers=1), 32, cache_dir=tmp_path / "c")
    hashes, colours = library.signatures()
    computed = tile_signatures(library.tiles)
    np.testing.assert_array_equal(hashes, computed[0])
    np.testing.assert_array_equal(colours, computed[1])
    by_id = dict(zip(library.source_ids, range(len(library)), strict=True))
    leaders = library.duplicate_leaders(DEFAULT_THRESHOLD)
    leader_of = {name: library.source_ids[leaders[by_id[name]]] for name in by_id}
    assert leader_of["b0-copy.png"] == "a0.png"
    assert leader_of["b1-jpeg.jpg"] == "a1.png"
    assert leader_of["b2-small.png"] == "a2.png"
    assert leader_of["b3-small.jpg"] == "a3.png"
    for kept in ("a0.png", "a1.png", "a2.png", "a3.png", "a4.png", "c4-brighter.png",
                 "d-red.png", "d-blue.png"):
        assert leader_of[kept] == kept, kept
    # Distinct photos are far apart.
    originals = hashes[[by_id[f"a{index}.png"] for index in range(5)]]
    assert hamming(originals[:, None], originals[None, :])[np.triu_indices(5, 1)].min() > 12
    # Without duplicates: the kept tiles in order, their pixels, the count dropped.
    kept = library.without_duplicates(DEFAULT_THRESHOLD)
    assert kept.duplicates_dropped == 4 and len(kept) == len(library) - 4
    assert [name for name in kept.source_ids if name.startswith("b")] == []
    for position, name in enumerate(kept.source_ids):
        np.testing.assert_array_equal(kept.tiles[position], library.tiles[by_id[name]])
    assert kept.features_dir != library.features_dir  # its own derived features
    assert kept.limit(3).source_ids == kept.source_ids[:3]
    strict = library.without_duplicates(0)  # equal hashes only: the copy, at least
    assert "b0-copy.png" not in strict.source_ids and "b1-jpeg.jpg" in strict.source_ids


def test_warm_runs_read_signatures_and_leaders_back(tmp_path, monkeypatch):
    folder = duplicates_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    library = TileLibrary.open(FolderSource(folder, workers=1), 16, cache_dir=cache)
    first = library.without_duplicates(DEFAULT_THRESHOLD)
    connection = sqlite3.connect(library.directory / "manifest.sqlite")
    assert connection.execute("SELECT COUNT(*) FROM tiles WHERE phash IS NULL").fetchone() == (0,)
    connection.close()

    def boom(*args, **kwargs):
        raise AssertionError("signed or grouped again on a warm run")

    monkeypatch.setattr("mosaicist.library._index.mirrored_tile_signatures", boom)
    monkeypatch.setattr("mosaicist.library._index.duplicate_leaders", boom)
    again = TileLibrary.open(FolderSource(folder, workers=1), 16, cache_dir=cache)
    assert again.stats.decoded == 0
    second = again.without_duplicates(DEFAULT_THRESHOLD)
    assert second.source_ids == first.source_ids
    np.testing.assert_array_equal(second.tiles, first.tiles)


def test_an_index_made_before_signatures_gets_them_once_without_decoding(tmp_path, monkeypatch):
    folder = duplicates_folder(tmp_path / "photos")
    cache = tmp_path / "cache"
    fresh = TileLibrary.open(FolderSource(folder, workers=1), 32, cache_dir=cache)
    decoded = fresh.signatures()  # of each window at 32 px, when decoded
    # Without its photos decoded again, an older index is signed from its tiles (at
    # 32 px, square and centred, the photos' windows; other sizes decode them once).
    expected = tile_signatures(fresh.tiles)
    assert (hamming(decoded[0], expected[0]) <= 8).all()
    # Make the manifest as schema 1 wrote it: no windows, no signatures.
    connection = sqlite3.connect(fresh.directory / "manifest.sqlite")
    for table, extra in (("tiles", ", position INTEGER NOT NULL"), ("staged", "")):
        connection.executescript(f"""
            CREATE TABLE old_{table} (source_id TEXT PRIMARY KEY, slot INTEGER NOT NULL,
                size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                content_hash TEXT NOT NULL{extra});
            INSERT INTO old_{table} SELECT source_id, slot, size, mtime_ns, content_hash
                {", position" if extra else ""} FROM {table};
            DROP TABLE {table};
            ALTER TABLE old_{table} RENAME TO {table};
        """)
    connection.execute("DELETE FROM meta WHERE name IN ('signed', 'tile_height', 'aspect', "
                       "'crop')")
    connection.execute("UPDATE meta SET value = '1' WHERE name = 'schema'")
    connection.commit()
    connection.close()
    old = TileLibrary.open(FolderSource(folder, workers=1), 32, cache_dir=cache, update=False)
    assert old.windows_for(old.source_ids) == {}
    for got, want in zip(old.signatures(), expected, strict=True):  # from the pixels
        np.testing.assert_array_equal(got, want)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(FolderSource, "decode", no_decoding)
    upgraded = TileLibrary.open(FolderSource(folder, workers=1), 32, cache_dir=cache)
    assert upgraded.stats.decoded == 0
    connection = sqlite3.connect(upgraded.directory / "manifest.sqlite")
    stored = connection.execute("SELECT COUNT(phash), COUNT(crop_left) FROM tiles").fetchone()
    meta = dict(connection.execute("SELECT name, value FROM meta").fetchall())
    connection.close()
    assert stored == (len(upgraded), 0) and meta["signed"] == "1" and meta["schema"] == "2"
    for got, want in zip(upgraded.signatures(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_make_drops_duplicates_and_reports_them(tmp_path):
    folder = duplicates_folder(tmp_path / "photos")
    target = noisy_target()
    cache = tmp_path / "cache"
    plain = make_mosaic(target, str(folder), preset="seed", cell_px=8, tile_px=8,
                        cache_dir=cache)
    assert plain.report()["duplicates_dropped"] == 0
    mosaic = make_mosaic(target, str(folder), preset="seed", cell_px=8, tile_px=8,
                         dedupe=DEFAULT_THRESHOLD, cache_dir=cache)
    report = mosaic.report()
    assert report["duplicates_dropped"] == 4 and report["tiles"] == len(plain.library) - 4
    assert not {name for name in mosaic.placements.source_ids if name.startswith("b")}
    assert mosaic.image.shape == plain.image.shape
    # From the command line: the summary, the report, and the groups of 'index'.
    runner = CliRunner()
    flags = ["--tiles", str(folder), "--preset", "seed", "--cell", "8", "--tile-px", "8",
             "--cache-dir", str(cache)]
    Image.fromarray(target).save(tmp_path / "target.png")
    made = runner.invoke(main, ["make", str(tmp_path / "target.png"), *flags, "--dedupe",
                                "-o", str(tmp_path / "out.png"), "--report",
                                str(tmp_path / "report.json")])
    assert made.exit_code == 0, made.output
    assert "4 near-duplicates dropped" in made.stderr
    assert json.loads((tmp_path / "report.json").read_text())["duplicates_dropped"] == 4
    loose = runner.invoke(main, ["make", str(tmp_path / "target.png"), *flags, "--dedupe", "0",
                                 "-o", str(tmp_path / "out.png")])
    assert "near-duplicates dropped" in loose.stderr and "4 near" not in loose.stderr
    listed = runner.invoke(main, ["index", str(folder), "--tile-px", "8", "--duplicates",
                                  "--cache-dir", str(cache)])
    assert listed.exit_code == 0, listed.output
    paragraphs = [block.splitlines() for block in listed.stdout.strip().split("\n\n")]
    assert [lines[0] for lines in paragraphs] == ["a0.png", "a1.png", "a2.png", "a3.png"]
    assert paragraphs[1][1].startswith("    b1-jpeg.jpg  (") and "bits)" in paragraphs[1][1]
    assert "4 near-duplicates in 4 groups at --dedupe 6" in listed.stderr
    bad = runner.invoke(main, ["index", str(folder), "--dedupe", "65", "--cache-dir",
                               str(cache)])
    assert bad.exit_code != 0 and "--dedupe must be between 0 and 64" in bad.stderr


def still_frames(rng, count, flips=3):
    """Hashes of ``count`` frames of one still scene: each a few unstable bits off one hash."""
    hashes = np.full(count, rng.integers(0, 2**63, dtype=np.uint64), np.uint64)
    for _ in range(flips):
        hashes ^= np.left_shift(np.uint64(1), rng.integers(0, 64, count).astype(np.uint64))
    return hashes


def counted_hamming(monkeypatch) -> list[int]:
    """Count the hash comparisons of ``dedupe``: the list each call's size is added to."""
    checked: list[int] = []
    real_bits_apart = dedupe_module._bits_apart

    def counted(first, second):
        checked.append(np.broadcast(first, second).size)
        return real_bits_apart(first, second)

    # Every comparison goes through it (``hamming`` too, and the walk's blocks).
    monkeypatch.setattr(dedupe_module, "_bits_apart", counted)
    return checked


def test_frames_of_a_still_scene_are_not_compared_pair_by_pair(monkeypatch):
    # Hashes a few bits apart, all near each other, had every pair listed and checked:
    # 10,000 frames of a still scene took 3 minutes (the count squared), 50,000 ran out
    # of memory. Only the frames' comparisons with the tiles kept need checking.
    count = 3000
    hashes = still_frames(np.random.default_rng(4), count)
    colours = np.full((count, 3), 120, np.uint8)
    checked = counted_hamming(monkeypatch)
    leaders = duplicate_leaders(hashes, colours, 6)
    monkeypatch.undo()
    np.testing.assert_array_equal(leaders, brute_leaders(hashes, colours, 6))
    assert sum(checked) < 100 * count  # listing every pair checks over 10 million


@pytest.mark.parametrize("threshold", [0, 3, 6, 10])
def test_leaders_found_by_halves_are_the_greedy_ones(threshold, monkeypatch):
    # Forced to split at every size: the halves must give the leaders of the walk in order.
    rng = np.random.default_rng(threshold)
    hashes = np.concatenate([still_frames(rng, 150, 2), still_frames(rng, 90, 4),
                             planted_hashes(rng, 120)])
    order = rng.permutation(len(hashes))
    hashes = hashes[order]
    colours = rng.integers(0, 3 * COLOUR_TOLERANCE, (len(hashes), 3)).astype(np.uint8)
    monkeypatch.setattr(dedupe_module, "_SPLIT_BELOW", 2)
    monkeypatch.setattr(dedupe_module, "_BUDGET_FACTOR", 0)
    monkeypatch.setattr(dedupe_module, "_BUDGET_FLOOR", 0)
    monkeypatch.setattr(dedupe_module, "_walk_is_cheaper", lambda *args: False)
    for given in (colours, None):
        np.testing.assert_array_equal(duplicate_leaders(hashes, given, threshold),
                                      brute_leaders(hashes, given, threshold))


@pytest.mark.parametrize("threshold", [-1, 65, float("nan"), 6.0, 6.5, True, "6", None])
@pytest.mark.parametrize("count", [0, 1, 3])
def test_a_bad_threshold_is_refused_by_name_whatever_the_library(threshold, count):
    # duplicate_leaders(..., -1) on 2+ tiles divided by zero choosing the bands, floats
    # and NaN failed with "'float' object cannot be interpreted as an integer", and with
    # fewer than two tiles any value passed unnoticed.
    from mosaicist.errors import OptionError

    hashes = np.array([1, 3, 7], np.uint64)[:count]
    colours = np.zeros((count, 3), np.uint8)
    for function in (duplicate_leaders, near_pairs):
        with pytest.raises(OptionError, match=r"^threshold must be"):
            function(hashes, colours, threshold)
    # Whole numbers of any integer type, at both ends of the range, are taken.
    for good in (0, np.int64(64), np.uint8(6)):
        assert len(duplicate_leaders(hashes, colours, good)) == count


def test_a_still_scene_at_a_loose_threshold_stops_listing_pairs_early(monkeypatch):
    # The pairs listed before giving up were bounded by the candidates random hashes
    # would give, which at loose thresholds grow with the count squared: 20,000 frames
    # of a still scene at --dedupe 10 held 800 MB of pairs, 100,000 took 21 s and 2.3 GB.
    # Once the near pairs are many times those of random hashes, the halves take over.
    count = 4000
    hashes = still_frames(np.random.default_rng(5), count)
    colours = np.full((count, 3), 120, np.uint8)
    monkeypatch.setattr(dedupe_module, "PAIR_CHUNK", 1 << 14)  # a fine-grained count
    checked = counted_hamming(monkeypatch)
    leaders = duplicate_leaders(hashes, colours, 10)
    monkeypatch.undo()
    assert hamming(hashes[0], hashes).max() <= 6  # each frame within 6 bits of the first
    assert (leaders == 0).all()
    assert sum(checked) < 200 * count  # listing the pairs first checked over 3 million


@pytest.mark.parametrize("threshold", [0, 1, 2, 5, 32, 63, 64])
def test_small_libraries_match_the_walk_in_order(threshold):
    # 0, 1 and 2 tiles, all one photo, all different, chains of near tiles, colours on
    # the tolerance's edge: every leader is the documented walk's, and a tile near
    # nothing, put anywhere, changes no other tile's leader.
    rng = np.random.default_rng(threshold)
    for count in (0, 1, 2, 3, 9, 40):
        for kind in ("planted", "same", "chain"):
            if kind == "planted":
                hashes = planted_hashes(rng, count)[:count]
            elif kind == "same":
                hashes = np.full(count, rng.integers(0, 2**63, dtype=np.uint64), np.uint64)
            else:  # each one more bit off the first: A ~ B ~ C without A ~ C
                step = max(1, threshold)
                hashes = np.array([(1 << min(64, index * step)) - 1 for index in range(count)],
                                  np.uint64) if threshold < 64 else np.zeros(count, np.uint64)
            colours = rng.choice([0, COLOUR_TOLERANCE, COLOUR_TOLERANCE + 1], (count, 3))
            colours = colours.astype(np.uint8)
            for given in (colours, None):
                leaders = duplicate_leaders(hashes, given, threshold)
                np.testing.assert_array_equal(leaders, brute_leaders(hashes, given, threshold))
            if threshold < 64:  # at 64 bits every hash is near every other
                lone = ~hashes[0] if count else np.uint64(0)
                lone_colour = np.array([[255, 0, 255]], np.uint8)
                far = hamming(lone, hashes) > threshold
                if far.all():
                    at = int(rng.integers(0, count + 1))
                    more = duplicate_leaders(np.insert(hashes, at, lone),
                                             np.insert(colours, at, lone_colour, axis=0),
                                             threshold)
                    shifted = np.delete(more, at)
                    shifted = shifted - (shifted > at)
                    assert more[at] == at
                    np.testing.assert_array_equal(
                        shifted, duplicate_leaders(hashes, colours, threshold))


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 5), (1, 400), (400, 1), (33, 31)])
def test_flat_and_tiny_tiles_sign_alike_whatever_their_shape(shape):
    # Every flat tile hashes to one value (its DC bit), black to none, at any size.
    values = [(0, 0, 0), (1, 1, 1), (200, 30, 30), (255, 255, 255), (7, 128, 254)]
    tiles = np.empty((len(values), *shape, 3), np.uint8)
    tiles[:] = np.array(values, np.uint8)[:, None, None, :]
    hashes, colours = tile_signatures(tiles)
    assert hashes.tolist() == [0, 1, 1, 1, 1]
    np.testing.assert_array_equal(colours, values)
    # A tile of noise signs the same alone as in a chunk.
    noise = np.random.default_rng(1).integers(0, 256, (3, *shape, 3)).astype(np.uint8)
    together = tile_signatures(noise)[0]
    assert [tile_signatures(one[None])[0][0] for one in noise] == together.tolist()


def test_a_few_tiles_build_no_key_table_of_millions():
    # At threshold 2 (bands of 21 and 22 bits) every call built a table of the 4 million
    # keys of each band, 100 MB and a tenth of a second, even for two tiles; the split
    # into halves makes many such calls.
    import tracemalloc

    hashes = np.array([0, 3, 0xFFFF << 40, 0xFFFF << 20], np.uint64)
    near_pairs(hashes, None, 2)  # what a first call sets up once is not counted
    tracemalloc.start()
    try:
        first, second = near_pairs(hashes, None, 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (first.tolist(), second.tolist()) == ([0], [1])
    assert peak < 1 << 20
