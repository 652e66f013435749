"""Near-duplicates: how far copies are from their photo, how close distinct photos come.

Chooses ``--dedupe``'s default threshold and the colour tolerance
(:mod:`mosaicist.dedupe`). For photos of the shared data (the targets, the
galaxy images, which are dark and much alike, and CIFAR-10 test images),
each is made into copies a library really holds: the same file, JPEG
re-encoded at quality 30 and 10, resized to half and a quarter, resized and
re-encoded, mirrored left-right (as it is and re-encoded), and (not a copy
the default should catch, for reference) cut 3% narrower. Each photo and
copy is indexed as ``make`` would (``decode_tile`` at 32 px, 1:1, centre
crop) and signed (``mirrored_tile_signatures``: the hash, the mirror
image's hash, the mean colour). Reported: the hash distance and the
mean-colour difference of each kind of copy to its photo (median, 95th
percentile, max; a mirrored copy's distance is to the photo's mirror's hash,
as grouping with mirrors measures it), and for the distinct photos the share
that a threshold would call near-identical to another, by their hashes
alone and with their mirrors.

With ``--leaders 30000,50000`` it times instead the grouping itself
(``duplicate_leaders``, what ``--dedupe`` runs) on the first so many
CIFAR-10 training photos' signatures, in library order, at each of
``--thresholds``: as they are, and with every mean colour made one (a
library of alike pictures, dark galaxies say, where loose thresholds pair
nearly every photo by hash). Each time is the median of ``--repeat`` runs;
the tiles kept are shown, so that runs of two versions can be compared.
Each is timed by the hashes alone and with the mirrors' hashes (a photo
near another's mirror image grouped with it), after the time to sign the
photos without and with their mirrors.

    python benchmarks/bench_dedupe.py [--data PATH] [--cifar 2000] [--galaxies 1000]
    python benchmarks/bench_dedupe.py --leaders 30000,50000 [--thresholds 6,8,10,12]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cache_dir, data_dir, machine, non_negative_int, positive_int  # noqa: E402

from mosaicist.dedupe import (  # noqa: E402
    COLOUR_TOLERANCE,
    HASH_BITS,
    duplicate_leaders,
    hamming,
    mirrored_tile_signatures,
    near_pairs,
    tile_signatures,
)
from mosaicist.imaging import decode_tile  # noqa: E402

TILE_PX = 32


def _jpeg(image: Image.Image, quality: int) -> bytes:
    data = io.BytesIO()
    image.save(data, "JPEG", quality=quality)
    return data.getvalue()


def _png(image: Image.Image) -> bytes:
    data = io.BytesIO()
    image.save(data, "PNG")
    return data.getvalue()


def _resized(image: Image.Image, factor: float) -> Image.Image:
    size = (max(8, round(image.width * factor)), max(8, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _copies(data: bytes) -> dict[str, bytes]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    narrower = image.crop((0, 0, round(image.width * 0.97), image.height))
    return {
        "same file": data,
        "JPEG q30": _jpeg(image, 30),
        "JPEG q10": _jpeg(image, 10),
        "half size": _png(_resized(image, 0.5)),
        "quarter size": _png(_resized(image, 0.25)),
        "half size, JPEG q30": _jpeg(_resized(image, 0.5), 30),
        MIRRORED: _png(ImageOps.mirror(image)),
        f"{MIRRORED}, JPEG q30": _jpeg(ImageOps.mirror(image), 30),
        "3% narrower (not a copy)": _png(narrower),
    }


#: The kinds of copy (:func:`_copies`) that are mirror images, measured from the photo's mirror.
MIRRORED = "mirrored"


def _signature(data: bytes) -> tuple[int, int, np.ndarray]:
    """The hash, the mirror image's hash and the mean colour of a photo, indexed at 32 px."""
    pixels = decode_tile(data, TILE_PX).pixels
    hashes, mirrors, colours = mirrored_tile_signatures(pixels[None])
    return int(hashes[0]), int(mirrors[0]), colours[0].astype(int)


THRESHOLDS = (2, 4, 6, 8, 10)


def _counts(text: str) -> list[int]:
    """``argparse`` type: comma-separated whole numbers of at least 1 (``30000,50000``)."""
    return [positive_int(part) for part in text.split(",")]


def _thresholds(text: str) -> list[int]:
    """``argparse`` type: comma-separated thresholds of 0 to 64 bits."""
    values = [non_negative_int(part) for part in text.split(",")]
    for value in values:
        if value > HASH_BITS:
            raise argparse.ArgumentTypeError(f"{value} must be at most {HASH_BITS}")
    return values


def time_leaders(data: Path, counts: list[int], thresholds: list[int], repeat: int) -> None:
    """Print the median time of ``duplicate_leaders`` on CIFAR-10 signatures (``--leaders``)."""
    from bench_million import load_cifar

    tiles = load_cifar(data, cache_dir(None))[:50_000]  # the training photos
    if max(counts) > len(tiles):
        sys.exit(f"benchmark: --leaders asks for {max(counts):,} photos; "
                 f"CIFAR-10 has {len(tiles):,} training photos")
    print(f"# {machine()}")
    print()
    started = time.perf_counter()
    tile_signatures(tiles[:max(counts)])
    plain_seconds = time.perf_counter() - started
    started = time.perf_counter()
    hashes, mirrors, colours = mirrored_tile_signatures(tiles[:max(counts)])
    print(f"Signing {max(counts):,} photos: {plain_seconds:.2f} s, with their mirrors "
          f"{time.perf_counter() - started:.2f} s")
    print()
    alike = np.full_like(colours, 12)  # one dark mean colour for every photo
    print(f"Grouping near-duplicates (duplicate_leaders): median of {repeat} "
          f"{'run' if repeat == 1 else 'runs'}, tiles kept")
    print()
    print("| photos | mean colours | mirrors | threshold | seconds | kept |")
    print("|---|---|---|---|---|---|")
    for count in counts:
        for name, given in (("as they are", colours), ("all alike", alike)):
            for mirrored in (False, True):
                for threshold in thresholds:
                    times = []
                    for _ in range(repeat):
                        started = time.perf_counter()
                        leaders = duplicate_leaders(hashes[:count], given[:count], threshold,
                                                    mirrors[:count] if mirrored else None)
                        times.append(time.perf_counter() - started)
                    kept = int((leaders == np.arange(count)).sum())
                    print(f"| {count:,} | {name} | {'yes' if mirrored else 'no'} | {threshold} "
                          f"| {np.median(times):.2f} | {kept:,} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="shared data folder")
    # A negative count would slice off the end of the list instead of failing.
    parser.add_argument("--cifar", type=non_negative_int, default=2000,
                        help="CIFAR-10 test images")
    parser.add_argument("--galaxies", type=non_negative_int, default=1000,
                        help="galaxy images")
    parser.add_argument("--leaders", type=_counts, default=None, metavar="COUNTS",
                        help="time the grouping instead, on this many CIFAR-10 training "
                             "photos (comma-separated: 30000,50000)")
    parser.add_argument("--thresholds", type=_thresholds, default=[6, 8, 10, 12, 16, 32, 64],
                        metavar="BITS", help="with --leaders: thresholds to time "
                                             "(comma-separated; default 6,8,10,12,16,32,64)")
    parser.add_argument("--repeat", type=positive_int, default=3,
                        help="with --leaders: runs per time, the median shown")
    args = parser.parse_args()
    data = data_dir(args.data)
    if args.leaders:
        time_leaders(data, args.leaders, args.thresholds, args.repeat)
        return
    sets = {
        "targets (large photos)": sorted((data / "targets").glob("*")),
        "CIFAR-10 test (32 px photos)": sorted((data / "cifar10" / "test").rglob("*.jpg"))
        [: args.cifar],
        "galaxies (dark, alike)": sorted((data / "galaxy-zoo").rglob("*.jpg"))[: args.galaxies],
    }
    if not any(sets.values()):
        sys.exit(f"benchmark: no photos in {data / 'targets'}, {data / 'cifar10' / 'test'} "
                 f"or {data / 'galaxy-zoo'}; pass --data PATH")
    print(f"# {machine()}")
    started = time.perf_counter()
    signed: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    # Per kind of copy: (bits apart, colour apart) of every photo's copy.
    apart: dict[str, tuple[list[int], list[int]]] = {}
    for name, files in sets.items():
        hashes = np.zeros(len(files), np.uint64)
        mirrors = np.zeros(len(files), np.uint64)
        colours = np.zeros((len(files), 3), np.uint8)
        for index, path in enumerate(files):
            raw = path.read_bytes()
            phash, mirror, colour = _signature(raw)
            hashes[index], mirrors[index], colours[index] = phash, mirror, colour
            for kind, copy in _copies(raw).items():
                copy_hash, _, copy_colour = _signature(copy)
                bits, shift = apart.setdefault(kind, ([], []))
                # A mirrored copy is a copy of the photo's mirror image.
                reference = mirror if kind.startswith(MIRRORED) else phash
                bits.append(int(hamming(np.array([reference], np.uint64),
                                        np.array([copy_hash], np.uint64))[0]))
                shift.append(int(np.abs(copy_colour - colour).max()))
        signed[name] = (hashes, mirrors, colours)
    total = sum(len(files) for files in sets.values())
    print(f"# {total} photos and {len(apart)} copies each, signed in "
          f"{time.perf_counter() - started:.0f} s")
    print()
    print("Copies: bits apart from their photo, colour apart (max channel), and the share "
          f"caught at each threshold (colour within {COLOUR_TOLERANCE}):")
    print()
    print("| copy | bits: median | p95 | max | colour: p95 | max | "
          + " | ".join(f"T={t}" for t in THRESHOLDS) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(THRESHOLDS))
    for kind, (bits, shift) in apart.items():
        b, c = np.array(bits), np.array(shift)
        caught = [np.mean((b <= t) & (c <= COLOUR_TOLERANCE)) for t in THRESHOLDS]
        print(f"| {kind} | {np.median(b):.0f} | {np.percentile(b, 95):.0f} | {b.max()} | "
              f"{np.percentile(c, 95):.0f} | {c.max()} | "
              + " | ".join(f"{share:.0%}" for share in caught) + " |")
    print()
    print("Distinct photos: the share that a threshold would drop as near-identical to "
          "another photo of the same set (hash and colour; with mirrors, a photo's hash "
          "near another's mirror's counts too):")
    print()
    print("| set | mirrors | photos | " + " | ".join(f"T={t}" for t in THRESHOLDS) + " |")
    print("|---|---|---|" + "---|" * len(THRESHOLDS))
    for name, (hashes, mirrors, colours) in signed.items():
        for mirrored in (False, True):
            label = f"| {name} | {'yes' if mirrored else 'no'} |"
            if not len(hashes):
                # An empty set (a folder missing, or --cifar 0) has no share to show.
                print(f"{label} 0 | " + " | ".join("-" for _ in THRESHOLDS) + " |")
                continue
            shares = []
            for threshold in THRESHOLDS:
                first, second = near_pairs(hashes, colours, threshold,
                                           mirrors=mirrors if mirrored else None)
                shares.append(len(np.unique(np.concatenate([first, second]))) / len(hashes))
            print(f"{label} {len(hashes)} | "
                  + " | ".join(f"{share:.1%}" for share in shares) + " |")


if __name__ == "__main__":
    main()
