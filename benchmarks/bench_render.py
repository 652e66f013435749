"""The render of a default ``make``: tiles dressed (moved in colour) before and after.

The default preset moves every tile in colour: its mean to its cell's, its
contrast (``gain``) and its chroma, in the metric's colour space
(:func:`mosaicist.render.dress_tiles`). This benchmark makes a mosaic once
(a warm index under ``--cache-dir``), then draws it again and again in this
process, alternating two versions of the dressing:

* ``before``: the float64 path as it was up to session 38 (kept below as
  :func:`reference_dress_tiles`): every step over a whole chunk of tiles (up
  to 2 megapixels, 48 MB of float64), memory to memory;
* ``after``: the package's :func:`~mosaicist.render.dress_tiles`.

Printed per target (and per metric, ``--metric`` given more than once): the
best render (``renderer.image()``) and dressing seconds of each, their ratio,
and how the pictures differ: the largest difference of any channel and the
share of pixels that differ at all.

In Lab and Oklab ``before`` takes the same steps as the package did up to
session 39, on whole chunks where the package took blocks (the same pixels;
its time within 20% of the package's, either way, on the default targets);
the package now draws them without ``pow`` (:class:`mosaicist.colour._SpaceBlocks`),
and ``pixels differing`` (a share, and a count) says how many pixels its
tables put a level off, if any.

The tiles are the first ``--photos`` JPEGs of each class of
``cifar10/train`` (``--photos 500``: 5,000 photos, as the seed's workload
with fewer photos), linked into a folder under the cache. Run (from the
repository root)::

    python benchmarks/bench_render.py
    python benchmarks/bench_render.py --metric oklab
    python benchmarks/bench_render.py --metric lab --metric oklab
    python benchmarks/bench_render.py --target targets/starry_night_google_1280.jpg \\
        --tile-px 64 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    cache_dir,
    cache_folder,
    data_dir,
    machine,
    positive_int,
    print_table,
    require_file,
)

from mosaicist import make_mosaic  # noqa: E402
from mosaicist.colour import encoded_means, from_space, grey_parts, to_space  # noqa: E402
from mosaicist.render import _renderer  # noqa: E402
from mosaicist.transforms import apply_transform  # noqa: E402

DEFAULT_TARGETS = ("targets/starry_night_google_1280.jpg",
                   "targets/cameratrap_american_black_bear.jpg")


def reference_dress_tiles(
    tiles: np.ndarray,
    transforms: np.ndarray | None = None,
    tint: np.ndarray | None = None,
    metric: str = "seed",
    gain: np.ndarray | None = None,
    chroma: np.ndarray | None = None,
    scored_mean: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`mosaicist.render.dress_tiles` as it was before session 38 (float64, whole chunks)."""
    out = np.asarray(tiles)
    if transforms is not None and np.any(transforms):
        out = out.copy()
        for code in np.unique(transforms).tolist():
            if code:
                chosen = transforms == code
                out[chosen] = apply_transform(out[chosen], code)
    gained = gain is not None and bool((gain != 1.0).any())
    paled = chroma is not None and bool((chroma != 1.0).any())
    if gained or paled or (tint is not None and np.any(tint)):
        values = to_space(out, metric)
        needs_mean = gained or paled or metric != "seed" or scored_mean is not None
        mean = values.mean(axis=(1, 2), keepdims=True) if needs_mean else None
        centre = (mean if mean is None
                  else _reference_origins(values, mean, tint, metric, gain, chroma, scored_mean))
        if gained or paled:
            assert mean is not None and centre is not None
            values -= mean
            if gained:
                assert gain is not None
                values *= gain[:, None, None, :]
            if paled:
                assert chroma is not None
                _reference_chroma(values, chroma, metric)
            values += centre
        elif centre is not mean:
            assert mean is not None and centre is not None
            values += centre - mean
        if tint is not None:
            values += tint[:, None, None, :]
        out = from_space(values, metric, overwrite=True)
    return out


def _reference_origins(values: np.ndarray, mean: np.ndarray, tint: np.ndarray | None,
                       metric: str, gain: np.ndarray | None, chroma: np.ndarray | None,
                       scored_mean: np.ndarray | None) -> np.ndarray:
    """The means tiles were drawn about (``_shift_origins`` before session 38)."""
    if scored_mean is not None:
        changed = np.zeros(len(mean), bool)
        if tint is not None:
            changed |= np.any(tint != 0, axis=1)
        if gain is not None:
            changed |= np.any(gain != 1.0, axis=1)
        if chroma is not None:
            changed |= chroma != 1.0
        if not changed.any():
            return mean
        centre = mean.copy()
        centre[changed, 0, 0] = np.asarray(scored_mean, np.float64)[changed]
        return centre
    if metric == "seed" or tint is None:
        return mean
    shifted = np.flatnonzero(np.any(tint != 0, axis=1))
    if not len(shifted):
        return mean
    centre = mean.copy()
    centre[shifted, 0, 0] = encoded_means(values[shifted], metric)
    return centre


def _reference_chroma(deviations: np.ndarray, chroma: np.ndarray, metric: str) -> np.ndarray:
    """``_scale_chroma`` before session 38: chroma scaled in place."""
    grey, weights = grey_parts(metric)
    factor = chroma[:, None, None]
    if grey[1] == 0 and grey[2] == 0:
        deviations[..., 1:] *= factor[..., None]
        return deviations
    lightness = (deviations.reshape(-1, 3) @ weights).reshape(deviations.shape[:-1])
    lightness *= 1.0 - factor
    deviations *= factor[..., None]
    deviations += lightness[..., None]
    return deviations


def tile_folder(data: Path, cache: Path, photos: int) -> Path:
    """A folder of links to the first ``photos`` JPEGs of each CIFAR-10 class (made once)."""
    final = cache / f"render-tiles-{photos}"
    if final.is_dir():
        return final
    train = data / "cifar10" / "train"
    if not train.is_dir():
        sys.exit(f"benchmark: {train} not found; pass --data PATH")
    with cache_folder(final) as folder:
        for kind in sorted(path for path in train.iterdir() if path.is_dir()):
            for picture in sorted(kind.glob("*.jpg"))[:photos]:
                (folder / f"{kind.name}_{picture.name}").symlink_to(picture.resolve())
    return final


def timed_render(renderer: _renderer.MosaicRenderer,
                 dress: Callable[..., np.ndarray]) -> tuple[np.ndarray, float, float]:
    """Draw ``renderer``'s picture with ``dress`` as the dressing: (picture, render s, dress s)."""
    spent = [0.0]

    def counted(*args: object, **kwargs: object) -> np.ndarray:
        started = time.perf_counter()
        try:
            return dress(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    kept = _renderer.dress_tiles
    _renderer.dress_tiles = counted  # the renderer looks it up by name, band by band
    try:
        started = time.perf_counter()
        picture = renderer.image()
        return picture, time.perf_counter() - started, spent[0]
    finally:
        _renderer.dress_tiles = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="shared data folder (default ../shared/data)")
    parser.add_argument("--cache-dir", help="index cache (default benchmarks/.cache)")
    parser.add_argument("--target", action="append",
                        help="target under the data folder (repeatable; default: "
                             + ", ".join(DEFAULT_TARGETS) + ")")
    parser.add_argument("--photos", type=positive_int, default=500,
                        help="photos of each CIFAR-10 class (default 500)")
    parser.add_argument("--metric", action="append",
                        help="colour space (repeatable; default: the preset's)")
    parser.add_argument("--tile-px", type=positive_int, default=32,
                        help="output pixels per tile (default 32: the size matched at)")
    parser.add_argument("--repeat", type=positive_int, default=5,
                        help="renders of each version, alternating (default 5)")
    args = parser.parse_args()
    data = data_dir(args.data)
    targets = [require_file(data / name, "target") for name in args.target or DEFAULT_TARGETS]
    cache = cache_dir(args.cache_dir)
    tiles = tile_folder(data, cache, args.photos)
    choices: list[dict[str, str]] = [{"metric": metric} for metric in args.metric or []]
    print(machine())
    rows = []
    for target, settings in [(target, settings) for target in targets
                             for settings in choices or [{}]]:
        mosaic = make_mosaic(target, tiles, cache_dir=cache, compute_metrics=False,
                             tile_px=args.tile_px, match_px=min(args.tile_px, 64), **settings)
        renderer = mosaic.renderer
        times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
        pictures = {}
        for _ in range(args.repeat):
            # Alternated, so that a busy moment of a shared machine falls on both.
            for name, dress in (("before", reference_dress_tiles),
                                ("after", _renderer.dress_tiles)):
                pictures[name], render_s, dress_s = timed_render(renderer, dress)
                times[name].append((render_s, dress_s))
        before, after = pictures["before"], pictures["after"]
        difference = np.abs(before.astype(np.int16) - after.astype(np.int16))
        differing = difference.any(axis=-1)
        share = float(differing.mean())
        best = {name: (min(t[0] for t in runs), min(t[1] for t in runs),
                       statistics.median(t[1] for t in runs)) for name, runs in times.items()}
        rows.append([
            target.name, f"{before.shape[1]}x{before.shape[0]}", mosaic.options.metric,
            f"{best['before'][0]:.3f}", f"{best['after'][0]:.3f}",
            f"{best['before'][1]:.3f}", f"{best['after'][1]:.3f}",
            f"{best['before'][1] / best['after'][1]:.1f}x",
            int(difference.max()), f"{share:.2e} ({int(differing.sum())})",
        ])
    print_table(rows, ["target", "output", "metric", "render before s", "render after s",
                       "dress before s", "dress after s", "dress speed-up", "max diff",
                       "pixels differing"])


if __name__ == "__main__":
    main()
