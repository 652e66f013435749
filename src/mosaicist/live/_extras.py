"""The ``live`` extra's optional packages: what works only with each, and how to get it.

``mosaicist live`` runs without them, with less: no QR code without ``segno``,
no HEIC photos without ``pillow-heif``. The command says so when it starts
(:func:`missing_notes`), and the refusals name the extra (:func:`needs_live`).
"""

from __future__ import annotations

import importlib
import threading

from ..errors import MosaicistError, install_extra

#: The README's command for the extra: mosaicist is not on PyPI, so it installs from the
#: checkout (``pip install "mosaicist[live]"`` would find nothing).
INSTALL_LIVE = install_extra("live")
#: The live extra's packages: import name -> (distribution name, what does not work without).
LIVE_PACKAGES = {
    "segno": ("segno", "the display shows no QR code of the guests' link"),
    "pillow_heif": ("pillow-heif", "HEIC photos from iPhones are refused"),
}
#: Major brands of the HEIF files that pillow-heif reads (HEIC from phones); AVIF's own
#: brands are left out, so an AVIF is never called a HEIC photo.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm",
                         b"hevs", b"mif1", b"msf1"})

_registered = threading.Lock()
_heif_opener = False


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


def heif_formats() -> tuple[str, ...]:
    """Pillow's HEIF format where pillow-heif is installed (its opener registered), else none.

    Asked at each use rather than once at import, so that what is refused
    follows what is installed now.
    """
    global _heif_opener
    try:
        import pillow_heif
    except ImportError:
        return ()
    with _registered:
        if not _heif_opener:
            pillow_heif.register_heif_opener()
            _heif_opener = True
    return ("HEIF",)


def looks_heif(data: bytes) -> bool:
    """Whether ``data`` starts as a HEIF file (an ISO-BMFF ``ftyp`` box of a HEIF brand)."""
    return data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS
