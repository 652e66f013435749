"""The QR code of the guests' link, as SVG (``segno``, from the ``live`` extra)."""

from __future__ import annotations

import io

from ._extras import MissingExtra, needs_live


def qr_svg(url: str) -> bytes:
    """An SVG QR code of ``url`` (error correction M, a quiet zone of 2 modules).

    Raises
    ------
    MissingExtra
        When ``segno`` is not installed (the message says how to install it).
    """
    try:
        import segno
    except ImportError:
        raise MissingExtra(needs_live("the QR code of the guests' link (segno)")) from None
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="svg", scale=8, border=2, xmldecl=False,
                                    title="The wall's upload page")
    return buffer.getvalue()
