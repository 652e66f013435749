"""``mosaicist live``: an event's photo wall that fills in as guests send photos.

Guests open a link (QR code on the display) on their phones and upload
photos; each is checked, stored, and placed within a second in the free
cell where it fits best after tinting (:mod:`._placer`: a look-ahead rule
with prices from a forecast, and, unless ``--final``, re-optimisation of
the arrangement when uploads pause). The display page shows the target
faintly and fills in live; the host's page moderates, removes, pauses,
completes empty cells, and exports the wall (PNG, TIFF, Deep Zoom) and
print sheets for a printed board.

Everything of an event lives in one folder (:class:`Event`: photos, state
in SQLite, outputs); starting again on it resumes exactly. The app
(:func:`make_live_app`, over :class:`Live`) runs on the package's hardened
server (:mod:`mosaicist.web`); :func:`serve_live` is the command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import Live, make_live_app, serve_live
    from ._event import Event, WallSettings
    from ._placer import Placer, WallCosts, optimal_cells, picture_vectors

__all__ = ["Event", "Live", "Placer", "WallCosts", "WallSettings", "make_live_app",
           "optimal_cells", "picture_vectors", "serve_live"]

_HOME = {"Live": "_app", "make_live_app": "_app", "serve_live": "_app", "Event": "_event",
         "WallSettings": "_event", "Placer": "_placer", "WallCosts": "_placer",
         "optimal_cells": "_placer", "picture_vectors": "_placer"}


def __getattr__(name: str) -> Any:
    # Imported on first use: the command line imports this package for its help only.
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names and the module's own dunders; not the helpers and imports of
    # this file (TYPE_CHECKING, Any), which are no API.
    return sorted([*__all__, *(name for name in globals() if name.startswith("__"))])
