"""The ``live`` extra's optional packages: what works only with each, and how to get it.

``mosaicist live`` runs without them, with less: no QR code without ``segno``,
no HEIC photos without ``pillow-heif``. The command says so when it starts
(:func:`missing_notes`), and the refusals name the extra (:func:`needs_live`).
"""

from __future__ import annotations

import importlib

from ..errors import MosaicistError, install_extra

# HEIF is read by the core too (targets, tile folders): its helpers live in imaging.
from ..imaging import HEIF_BRANDS, heif_formats, looks_heif  # noqa: F401

#: The README's command for the extra: mosaicist is not on PyPI, so it installs from the
#: checkout (``pip install "mosaicist[live]"`` would find nothing).
INSTALL_LIVE = install_extra("live")
#: The live extra's packages: import name -> (distribution name, what does not work without).
LIVE_PACKAGES = {
    "segno": ("segno", "the display shows no QR code of the guests' link"),
    "pillow_heif": ("pillow-heif", "HEIC photos from iPhones are refused"),
}


class MissingExtra(MosaicistError):
    """A feature needs a package of the ``live`` extra that is not installed."""


def installed(module: str) -> bool:
    """Whether ``module`` imports (a broken install counts as missing)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def needs_live(what: str) -> str:
    """One sentence: ``what`` needs the live extra, and the command that installs it."""
    return f"{what} needs the live extra: {INSTALL_LIVE}"


def missing_notes() -> list[str]:
    """One warning line per package of the live extra that is not installed.

    Returns
    -------
    list of str
        Each names the package, what does not work without it, and the
        install command; empty when the extra is installed.
    """
    return [f"mosaicist live: warning: {name} is not installed, so {loss}; "
            f"install the live extra: {INSTALL_LIVE}"
            for module, (name, loss) in LIVE_PACKAGES.items() if not installed(module)]
