"""The settings form of the studio: every setting of ``make``, in plain words.

The page draws its form from :func:`settings_form`: each setting's
declaration (:func:`mosaicist.options.settings`: default, kind, choices,
range, help) with a plain-language label and a group, ``basic`` (shown) or
``advanced`` (behind a disclosure). A setting added to
:class:`~mosaicist.options.MosaicOptions` appears in the form by itself,
under "advanced", labelled from its name until it is given a label here.

The page is for people who never open a terminal, so it has its own words
where the command line's help needs programmer ones (``--max-uses K ...;
'none': no limit``, "Chebyshev", "sRGB"): :data:`HELP` (what each setting
does), :data:`CHOICE_LABELS` (what each choice is called),
:data:`NONE_LABELS` (what "no value" means for the settings that may have
none: a tick box on the page, since "none" cannot be typed into a number
field) and :data:`PRESET_DESCRIPTIONS`. A setting without its own words
here shows its declaration's help, with other settings named by their labels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..dedupe import DEFAULT_THRESHOLD as DEDUPE_THRESHOLD
from ..options import DEFAULT_PRESET, PRESETS, Setting, settings
from ..sizing import DEFAULT_DPI

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
    "identical_photos": "Photos in the collection twice",
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
    "search": "Finding the closest photo",
    "device": "Run on",
    "overlay": "Blend the picture over the mosaic",
    "dpi": "Print resolution",
    "jpeg_quality": "Picture quality (JPEG, WebP)",
    "dzi_tile_size": "Zoom tile size",
    "dzi_overlap": "Zoom tile overlap",
    "dzi_format": "Zoom tile format",
    "compute_metrics": "Measure the likeness",
}
#: What each setting does, for the page: ``{name}`` stands for another setting, shown as
#: its label (as in :attr:`mosaicist.options.Setting.help`). The command line's help
#: stays in :mod:`mosaicist.options`, in the words a terminal user types.
HELP = {
    "preset": "A ready-made set of the settings below; a setting you change here wins "
              "over it.",
    "cell_px": "How many pixels of your picture each photo stands for, across.",
    "tile_px": "How many pixels wide each photo is drawn in the finished mosaic: larger "
               "tiles make a larger, sharper mosaic (at most 1,024).",
    "match_px": "How many pixels wide photos are when they are compared with your picture. "
                "Automatic: the {tile_px}, up to 64; above that, 32. The mosaic itself is "
                "drawn from the original photos.",
    "aspect": "Width to height of each tile, such as 1:1 (square), 3:2 or 4:3 (wider than "
              "tall) or 2:3 (taller than wide); photos are cut to this shape.",
    "cells": "About how many cells the mosaic has in all; the cell size that comes "
             "closest is chosen.",
    "print_size": "Make the mosaic for a print of this size, such as 60x40cm (in cm, mm or "
                  "in): the picture is cut to the print's shape and the {tile_px} chosen "
                  "to fill it at the {dpi}.",
    "limit": "Use only this many photos: the first ones of the collection.",
    "adaptive": "Split cells into four smaller ones where your picture has fine detail, up "
                "to this many times (0: every cell the same size). Each time halves the "
                "cells, so the cell size and the {tile_px} must divide evenly by 2 that many "
                "times.",
    "detail": "With {adaptive}: how much the brightness inside a cell must vary for it to "
              "be split, from 0 to 255; lower splits more cells.",
    "crop": "Where each photo is cut to the {aspect}: in the middle, or around its subject "
            "(the faces found, else the most detailed part).",
    "dedupe": "Leave out photos that look almost the same as one before them (bursts, "
              "copies). The number says how different two photos may be and still count "
              "as the same, from 0 (only photos that look exactly alike) to 64; 6 is a good "
              "start.",
    "identical_photos": "A photo that is in the collection more than once, exactly the same "
                        "(copied into two folders, saved twice): used as one photo, so that "
                        "the limits on repeats count its copies together and never put "
                        "them side by side, or each copy as a photo of its own.",
    "colour_profiles": "Many phones and cameras save photos with a colour profile that says "
                       "how their colours are meant to look. Respected: such photos keep "
                       "their true colours; ignored: their colours are taken as stored, "
                       "which can look dull or off.",
    "max_target_pixels": "Pictures with more pixels than this are refused, so that a huge "
                         "file cannot fill the computer's memory; raise it for very large "
                         "pictures.",
    "metric": "How alike a photo and a cell are judged: by their plain red, green and blue "
              "values, or in colours measured as the eye sees differences (Lab, Oklab).",
    "augment": "Also try each photo mirrored or turned, for more choice in each cell (with "
               "a {aspect} that is not square, only the mirrors and the half turn).",
    "tint": "How far each photo's average colour is moved toward its cell's: 0 keeps the "
            "photos as they are, 1 gives each its cell's colour. Photos are chosen after "
            "the correction.",
    "tint_max": "Where no photo comes close to a cell's colour (dark skies, deep colours), "
                "correct it more, up to this; off: the same {tint} everywhere. At least "
                "the {tint}.",
    "contrast": "How far each photo's contrast is moved toward its cell's: 0 keeps it, 1 "
                "matches the cell (never more than four times flatter or stronger).",
    "chroma": "How far each photo's colours are toned down toward its cell's: at 1 a photo "
              "on a grey cell is drawn grey, at 0 photos keep their colours. No photo is "
              "made more colourful.",
    "max_uses": "The most times one photo may appear in the mosaic. No limit: as often as "
                "it is the closest. A limit needs enough photos to fill every cell.",
    "min_uses": "Put every photo of the collection in the mosaic at least this many times "
                "(a gift mosaic of everyone's photos); 0: no minimum.",
    "min_spacing": "The same photo is never placed closer than this many cells to itself "
                   "(a diagonal neighbour is 1 cell away); 0 or 1: no limit.",
    "assign": "How the limits on repeats ({max_uses}, {min_spacing}) are met: the best "
              "arrangement overall, or a quicker one that may be a little less close.",
    "search": "Exact compares every photo with every cell and takes the closest; faster "
              "is quicker with very large collections (hundreds of thousands of photos) "
              "and may now and then pick a photo a little less close.",
    "device": "Where the photos are compared with your picture: this computer's "
              "processor, or an NVIDIA graphics card (only where mosaicist was installed "
              "with graphics card support).",
    "overlay": "Lay your picture faintly over the mosaic, from 0 (not at all) to 1 (only "
               "the picture): the likeness is stronger, but it shows from close up, and "
               "the quality report says it was used.",
    "dpi": "Dots per inch written into the image files for printing: with a {print_size}, "
           "the print's (300 when not given); else none is written.",
    "jpeg_quality": "Quality of the JPEG and WebP files, from 1 to 100: higher is sharper "
                    "and larger. Automatic: 92, and 90 for the zoomable view's pieces.",
    "dzi_tile_size": "The zoomable view (and the Deep Zoom download) is cut into square "
                     "pieces this many pixels wide; the usual size suits most uses.",
    "dzi_overlap": "Pixels each piece of the zoomable view repeats from its neighbours, at "
                   "most half a piece; the usual 1 suits most uses.",
    "dzi_format": "The image format of the zoomable view's pieces: JPEG (small), PNG "
                  "(exact, larger) or WebP (smallest).",
    "compute_metrics": "Measure how alike the mosaic and the picture are, and how often "
                       "photos repeat, for the quality report.",
}
#: What each choice is called on the page, by setting (the value is what is sent).
CHOICE_LABELS: dict[str, dict[str, str]] = {
    "preset": {"seed": "Closest photo (no correction)", "balanced": "Balanced",
               "varied": "Varied"},
    "metric": {"seed": "Plain red, green and blue", "lab": "Lab (closer to the eye)",
               "oklab": "Oklab (closer to the eye)"},
    "augment": {"none": "No", "flips": "Mirrored too", "rotations": "Turned too",
                "all": "Mirrored and turned"},
    "crop": {"centre": "In the middle", "subject": "Around the subject"},
    "colour_profiles": {"ignore": "Ignored", "convert": "Respected"},
    "identical_photos": {"keep": "Each copy a photo", "drop": "Used as one photo"},
    "assign": {"optimal": "Best", "greedy": "Quick"},
    "search": {"exact": "Exact (every photo compared)",
               "approximate": "Faster (approximate, for huge collections)"},
    "device": {"cpu": "This computer's processor", "cuda": "NVIDIA graphics card"},
    "dzi_format": {"jpeg": "JPEG", "png": "PNG", "webp": "WebP"},
}
#: What "no value" (None) means, for the settings that may have none: the page's tick box.
NONE_LABELS = {
    "match_px": "Automatic",
    "cells": "Not given",
    "print_size": "No print",
    "limit": "All photos",
    "dedupe": "Keep every photo",
    "tint_max": "Off",
    "max_uses": "No limit",
    "dpi": "None written",
    "jpeg_quality": "Automatic",
}
#: The value a setting takes when its tick box for "no value" is cleared and neither the
#: preset nor the page has one (for ``match_px`` the page shows the automatic size).
FIRST_VALUES = {"limit": 1000, "dedupe": DEDUPE_THRESHOLD, "tint_max": 1.0, "max_uses": 1,
                "dpi": DEFAULT_DPI, "jpeg_quality": 92, "cells": 2500}
#: The presets as the page describes them (:attr:`mosaicist.options.Preset.description`
#: is the command line's).
PRESET_DESCRIPTIONS = {
    "seed": "Each cell gets the photo closest to it, as it is: no colour correction, and a "
            "photo may come back as often as it is the closest (the original method).",
    "balanced": "Each photo used once where there are enough (else every photo, as evenly "
                "as they allow), never the same photo twice within 5 cells, photos toned "
                "to their cells' colour and contrast (grey on a grey cell) and cut around "
                "their subject.",
    "varied": "No photo more than twice, never the same photo twice within 5 cells, photos "
              "tinted halfway to their cells' colour and cut around their subject.",
}
#: Units shown after a number field (the declarations' units are for messages).
UNIT_LABELS = {"tile_px": "px", "match_px": "px", "max_target_pixels": "pixels",
               "dzi_tile_size": "px", "dzi_overlap": "px", "min_spacing": "cells",
               "cell_px": "px", "dpi": "dpi", "dedupe": ""}
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


def help_text(declared: Setting) -> str:
    """What setting ``declared`` does, in the page's words, other settings named by label."""
    help = HELP.get(declared.name)
    if help is None:
        return declared.describe(quoted)
    return Setting.describe(dataclasses.replace(declared, help=help), quoted)


def settings_form() -> list[dict[str, Any]]:
    """Every setting as the page draws it.

    Returns
    -------
    list of dict
        In declaration order: ``name``, ``label``, ``help`` (in plain words,
        other settings named by their labels), ``kind`` (``int``, ``float``,
        ``str``, ``bool``), ``optional`` (None is a value), ``default``
        (before any preset), ``choices``, ``low``, ``high``, ``unit`` (for
        messages), ``section`` and ``group`` (``basic`` or ``advanced``);
        and, only where they apply, ``choice_labels`` (value -> what the
        page calls it, for a setting with choices), ``none_label`` (what
        None means, "No limit", for an optional setting), ``first_value``
        (the value its "no value" tick box gives when cleared) and
        ``unit_label`` (shown after the field: "px").
    """
    form = []
    for declared in settings():
        choices = declared.choices or _registry_choices(declared.name)
        item: dict[str, Any] = {
            "name": declared.name,
            "label": label(declared.name),
            "help": help_text(declared),
            "kind": _KINDS.get(declared.kind, "str"),
            "optional": declared.optional,
            "default": declared.default,
            "choices": list(choices) if choices else None,
            "low": declared.low,
            "high": declared.high,
            "unit": declared.unit,
            "section": declared.section,
            "group": "basic" if declared.name in BASIC else "advanced",
        }
        if choices:
            # A plugin's search or device keeps its own name.
            named = CHOICE_LABELS.get(declared.name, {})
            item["choice_labels"] = {choice: named.get(choice, choice) for choice in choices}
        if declared.optional:
            item["none_label"] = NONE_LABELS.get(declared.name, "None")
        if declared.name in FIRST_VALUES:
            item["first_value"] = FIRST_VALUES[declared.name]
        unit = UNIT_LABELS.get(declared.name, declared.unit)
        if unit or declared.unit:
            item["unit_label"] = unit
        form.append(item)
    return form


def presets_form() -> list[dict[str, Any]]:
    """The presets: ``name``, ``label``, ``description`` (in plain words), ``settings``
    (what each sets) and ``default``."""
    return [{"name": preset.name, "label": CHOICE_LABELS["preset"].get(preset.name, preset.name),
             "description": PRESET_DESCRIPTIONS.get(preset.name, preset.description),
             "settings": dict(preset.settings), "default": preset.name == DEFAULT_PRESET}
            for preset in PRESETS.values()]
