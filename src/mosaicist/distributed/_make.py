"""A whole mosaic on a cluster: index, match and (by the caller) render on the workers."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..library import TileLibrary
from ..options import MosaicOptions
from ..paths import cache_dir as default_cache_dir
from ..pipeline import Mosaic, Target, Tiles, make_mosaic
from ..sizing import fit_options, options_plan
from ._index import index_library
from ._match import RANGE_TILES, cluster_matching

if TYPE_CHECKING:
    from distributed import Client


def make_on_cluster(
    client: Client,
    target: Target,
    tiles: Tiles = "cifar10",
    options: MosaicOptions | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
    quiet: bool = True,
    block_cells: int | None = None,
    range_tiles: int = RANGE_TILES,
    **settings: Any,
) -> Mosaic:
    """:func:`mosaicist.make_mosaic` with the indexing and the exact matching on a cluster.

    The library is indexed by the workers (:func:`index_library`) unless an
    opened :class:`~mosaicist.library.TileLibrary` is given, and the exact
    matchers run their blocks of cells on the workers (:func:`cluster_matching`);
    the result is the one :func:`~mosaicist.make_mosaic` gives. Write the
    picture with :func:`write_on_cluster` to draw it on the workers too.

    Parameters
    ----------
    client : distributed.Client
        The cluster.
    target, tiles, options, cache_dir, show_progress, quiet
        As for :func:`mosaicist.make_mosaic`.
    block_cells : int, optional
        Cells per matching task (see :func:`cluster_matching`).
    range_tiles : int
        Most library tiles per matching task.
    **settings
        As for :func:`mosaicist.make_mosaic`.

    Returns
    -------
    Mosaic
        As :func:`mosaicist.make_mosaic`; ``timings["index"]`` includes the
        cluster's indexing.
    """
    options = options or MosaicOptions()
    if settings:
        options = options.replace(**settings)
    cache = default_cache_dir(cache_dir)
    started = time.perf_counter()
    library = tiles
    if not isinstance(tiles, TileLibrary):
        # The sizes the pipeline will choose decide which index it reads.
        sized = fit_options(options, options_plan(options, _target_size(target, options),
                                                  name=str(target)))
        assert sized.match_px is not None
        library = index_library(client, tiles, sized.match_px, cache, show_progress, quiet,
                                aspect=sized.aspect_ratio, crop=sized.crop,
                                colour_profiles=sized.colour_profiles)
    indexed = time.perf_counter() - started
    with cluster_matching(client, cache, block_cells, range_tiles):
        mosaic = make_mosaic(target, library, options, cache_dir=cache,
                             show_progress=show_progress, quiet=quiet)
    mosaic.timings["index"] += indexed
    return mosaic


def _target_size(target: Target, options: MosaicOptions) -> tuple[int, int]:
    """The target's ``(width, height)``, from a file's header or an array's shape."""
    from ..imaging import target_size

    if isinstance(target, np.ndarray):
        return int(target.shape[1]), int(target.shape[0])
    if isinstance(target, Image.Image):
        return target.size
    return target_size(target, options.max_target_pixels)
