"""The values settings take and the limits they default to, importing nothing.

The command line's help (``mosaicist --help``, ``mosaicist make --help``)
and ``--version`` list these, and :mod:`mosaicist.options` checks settings
against them, before any stage needs NumPy or Pillow: the modules that use
them (:mod:`mosaicist.colour`, :mod:`mosaicist.imaging`,
:mod:`mosaicist.transforms` and the others named below) import them from
here, so each is declared once and help does not pay for those modules'
imports (about a fifth of a second).

Nothing here may import NumPy, Pillow or a module of the package that does.
"""

from __future__ import annotations

#: Values of the ``metric`` setting, the colour spaces of :mod:`mosaicist.colour`.
METRICS = ("seed", "lab", "oklab")

#: Values of the ``colour_profiles`` setting: ``ignore`` (the stored values taken as
#: sRGB, as the seed's reader does) and ``convert`` (embedded profiles applied; see
#: :mod:`mosaicist._profiles`).
COLOUR_PROFILE_MODES = ("ignore", "convert")

#: Values of the ``identical_photos`` setting: ``keep`` every photo of the library, or
#: ``drop`` each whose tile is identical, pixel for pixel, to an earlier one's (the same
#: picture twice: see :func:`mosaicist.dedupe.identical_leaders`).
IDENTICAL_PHOTO_MODES = ("keep", "drop")

#: The ``crop`` setting's values (see :mod:`mosaicist.crop`).
CROP_MODES = ("centre", "subject")

#: ``--dedupe`` given without a value: the largest hash distance that still counts as
#: the same photo (chosen by ``benchmarks/bench_dedupe.py``: copies re-encoded,
#: resized and both stay within it, distinct photos stay far outside; see
#: :mod:`mosaicist.dedupe`).
DEDUPE_THRESHOLD = 6

#: Default limit of a target's pixels: murals may be large, but not unboundedly so
#: (the ``max_target_pixels`` setting raises it; checked by :mod:`mosaicist.imaging`).
TARGET_MAX_PIXELS = 1_500_000_000

#: Resolution of a print when ``dpi`` is not given: what photo labs ask for at arm's
#: length (see :mod:`mosaicist.sizing`).
DEFAULT_DPI = 300
#: Accepted ``dpi``: up to a 16-bit value (JPEG's JFIF density field).
DPI_RANGE = (1, 65535)

#: Transform codes added by each ``augment`` setting: positions in
#: :data:`mosaicist.transforms.TRANSFORM_NAMES`, the identity (0) first.
AUGMENT_SETS = {
    "none": (0,),
    "flips": (0, 1),
    "rotations": (0, 2, 3, 4),
    "all": (0, 1, 2, 3, 4, 5, 6, 7),
}

#: ``search`` values of the built-in matchers, in the order of
#: :data:`mosaicist.match.MATCHERS` (help lists them without importing the matchers;
#: a plugin's join them once registered).
BUILT_IN_SEARCHES = ("exact", "approximate")
#: ``device`` values of the built-in matchers, in the same order.
BUILT_IN_DEVICES = ("cpu", "cuda")
