"""The QR code of the guests' link, as SVG (``segno``, from the ``live`` extra)."""

from __future__ import annotations

import io

from ..errors import MosaicistError


def qr_svg(url: str) -> bytes:
    """An SVG QR code of ``url`` (error correction M, a quiet zone of 2 modules).

    Raises
    ------
    MosaicistError
        When ``segno`` is not installed.
    """
    try:
        import segno
    except ImportError:
        raise MosaicistError("the QR code needs segno: install mosaicist with the live extra, "
                             "pip install 'mosaicist[live]'") from None
    buffer = io.BytesIO()
    segno.make(url, error="m").save(buffer, kind="svg", scale=8, border=2, xmldecl=False,
                                    title="The wall's upload page")
    return buffer.getvalue()
