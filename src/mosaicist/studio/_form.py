"""The settings form of the studio: every setting of ``make``, in plain words.

The page draws its form from :func:`settings_form`: each setting's
declaration (:func:`mosaicist.options.settings`: default, kind, choices,
range, help) with a plain-language label and a group, ``basic`` (shown) or
``advanced`` (behind a disclosure). A setting added to
:class:`~mosaicist.options.MosaicOptions` appears in the form by itself,
under "advanced", labelled from its name until it is given a label here.
"""

from __future__ import annotations

from typing import Any

from ..options import DEFAULT_PRESET, PRESETS, settings

#: Plain-language labels of the settings.
LABELS = {
    "preset": "Style",
    "cell_px": "Cell size in the picture",
    "tile_px": "Tile size",
    "match_px": "Comparison size",
    "aspect": "Tile shape",
    "cells": "Number of cells",
    "print_size": "Print size",
    "limit": "Use only the first photos",
    "adaptive": "Smaller cells where there is detail",
    "detail": "Detail that splits a cell",
    "crop": "Where photos are cut",
    "colour_profiles": "Colour profiles",
    "dedupe": "Drop near-identical photos",
    "max_target_pixels": "Largest picture accepted",
    "metric": "Colour matching",
    "augment": "Mirrored and turned photos",
    "tint": "Colour correction",
    "tint_max": "Stronger correction where needed",
    "contrast": "Contrast correction",
    "chroma": "Colour variation correction",
    "max_uses": "Most uses of one photo",
    "min_uses": "Least uses of every photo",
    "min_spacing": "Distance between repeats",
    "assign": "How repeats are solved",
    "search": "Search",
    "device": "Device",
    "overlay": "Blend the picture over the mosaic",
    "dpi": "Print resolution",
    "jpeg_quality": "JPEG quality",
    "dzi_tile_size": "Zoom tile size",
    "dzi_overlap": "Zoom tile overlap",
    "dzi_format": "Zoom tile format",
    "compute_metrics": "Measure the likeness",
}
#: The settings shown without opening "advanced", in the order shown.
BASIC = ("preset", "cell_px", "cells", "print_size", "dpi", "tile_px", "metric", "max_uses",
         "min_spacing", "tint", "augment")
#: The tile sources offered by name (downloaded on first use).
DATASETS = ("cifar10", "cifar100", "galaxy10")
_KINDS = {int: "int", float: "float", str: "str", bool: "bool"}


def label(name: str) -> str:
    """The plain-language label of setting ``name``."""
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def quoted(name: str) -> str:
    """Setting ``name`` named in a sentence by its label: \u201cmost uses of one photo\u201d.

    The argument of :meth:`mosaicist.errors.OptionError.message` for the
    studio's messages, which name settings as the page labels them.
    """
    text = label(name)
    if len(text) > 1 and text[1].islower():
        text = text[0].lower() + text[1:]
    return f"\u201c{text}\u201d"


def _registry_choices(name: str) -> tuple[str, ...] | None:
    """The values of the settings chosen from the matcher registry (plugins included)."""
    if name not in ("search", "device"):
        return None
    from ..match import MATCHERS

    if name == "search":
        return tuple(dict.fromkeys(matcher.search for matcher in MATCHERS.values()))
    return tuple(dict.fromkeys(device for matcher in MATCHERS.values()
                               for device in matcher.devices))


def settings_form() -> list[dict[str, Any]]:
    """Every setting as the page draws it.

    Returns
    -------
    list of dict
        In declaration order: ``name``, ``label``, ``help`` (other settings
        named by their labels), ``kind`` (``int``, ``float``, ``str``,
        ``bool``), ``optional`` (None is a value: "no limit"), ``default``
        (before any preset), ``choices``, ``low``, ``high``, ``unit``,
        ``section`` and ``group`` (``basic`` or ``advanced``).
    """
    form = []
    for declared in settings():
        choices = declared.choices or _registry_choices(declared.name)
        form.append({
            "name": declared.name,
            "label": label(declared.name),
            "help": declared.describe(lambda name: f"\u201c{label(name).lower()}\u201d"),
            "kind": _KINDS.get(declared.kind, "str"),
            "optional": declared.optional,
            "default": declared.default,
            "choices": list(choices) if choices else None,
            "low": declared.low,
            "high": declared.high,
            "unit": declared.unit,
            "section": declared.section,
            "group": "basic" if declared.name in BASIC else "advanced",
        })
    return form


def presets_form() -> list[dict[str, Any]]:
    """The presets: ``name``, ``description``, ``settings`` (what each sets), ``default``."""
    return [{"name": preset.name, "description": preset.description,
             "settings": dict(preset.settings), "default": preset.name == DEFAULT_PRESET}
            for preset in PRESETS.values()]
