"""The mosaicist studio: a local web app that makes mosaics in the browser.

``mosaicist studio`` (:func:`serve_studio`) serves one page on localhost:
choose a target and the photos for the tiles, see a live preview as the
settings change, make the mosaic in the background (progress pushed to the
page, cancellable), zoom into it, download it, and find every run again in
the history. The app (:func:`make_studio_app`, over a :class:`Studio`)
runs on the package's hardened server (:mod:`mosaicist.web`); the work is
done by the same engine as ``mosaicist make``, in child processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import Studio, make_studio_app, serve_studio

__all__ = ["Studio", "make_studio_app", "serve_studio"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the job processes import the engine's modules of this
    # package and should not pay for the web app.
    if name in __all__:
        from . import _app

        return getattr(_app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names and the module's own dunders; not the helpers and imports of
    # this file (TYPE_CHECKING, Any), which are no API.
    return sorted([*__all__, *(name for name in globals() if name.startswith("__"))])
