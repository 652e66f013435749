"""Matching: give every cell of the grid a tile of the library.

The objective is the seed's: the summed squared difference between a tile
and its cell scaled up to the tile's size (see
:class:`~mosaicist.grid.Geometry`), in the colour space of the ``metric``
setting, over every transform ``augment`` adds, after the mean-colour shift
of ``tint``.

Matchers, one table (:data:`MATCHERS`), considered in this order:

==============  ==========  ========  ===========  ===========================
name            search      device    repetition   module
==============  ==========  ========  ===========  ===========================
``exact``       exact       cpu       no           :mod:`._exact` (PCA bounds)
``approximate`` approximate cpu       no           :mod:`._approximate` (IVF)
``gpu``         exact       cuda      no           :mod:`._gpu` (PyTorch GEMMs)
``assignment``  exact       cpu       yes          :mod:`._capped`, :mod:`._assign`
==============  ==========  ========  ===========  ===========================

:func:`matcher_for` picks one from a mosaic's settings; a new matcher is a
subclass of :class:`Matcher` passed to :func:`register_matcher`.
"""

from ._approximate import ApproximateMatcher, match_approximate
from ._assign import (
    Assignment,
    assign_tiles,
    check_feasible,
    spacing_capacity,
    spacing_violations,
    tile_capacity,
    verify_placement,
)
from ._capped import CappedMatcher, best_transform, fit_limits, minimum_slots
from ._exact import ExactMatcher, brute_force, dot_dtype, exact_distances, match_exact
from ._features import TileFeatures, cached_features, compute_features
from ._gpu import GpuMatcher, match_torch
from ._prepare import prepare_tiles
from ._registry import (
    MATCHERS,
    Matcher,
    MatchRequest,
    MatchResult,
    fitted_matcher,
    matcher_for,
    register_matcher,
)

for _matcher in (ExactMatcher(), ApproximateMatcher(), GpuMatcher(), CappedMatcher()):
    register_matcher(_matcher)
del _matcher

__all__ = [
    "MATCHERS",
    "ApproximateMatcher",
    "Assignment",
    "CappedMatcher",
    "ExactMatcher",
    "GpuMatcher",
    "MatchRequest",
    "MatchResult",
    "Matcher",
    "TileFeatures",
    "assign_tiles",
    "best_transform",
    "brute_force",
    "cached_features",
    "check_feasible",
    "compute_features",
    "dot_dtype",
    "exact_distances",
    "fit_limits",
    "match_approximate",
    "match_exact",
    "match_torch",
    "fitted_matcher",
    "matcher_for",
    "minimum_slots",
    "prepare_tiles",
    "register_matcher",
    "spacing_capacity",
    "spacing_violations",
    "tile_capacity",
    "verify_placement",
]
