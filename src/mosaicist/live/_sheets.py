"""Print sheets for a printed board: every placed photo as on the wall, and the underlay grid.

**Sheets** (:func:`write_sheets`): each placed photo, cut and tinted exactly
as it shows in its cell, drawn at the board's tile size (``tile_cm`` wide)
from the stored photo (up to 2048 px, not the screen tile), with a thin
cutting frame and its label underneath: ``R<row> C<col>``, counted from 1
at the top left. Photos follow in row order, as many per A4 or Letter page
as fit inside 10 mm margins.

**Underlay** (:func:`write_underlay`): the board's grid to stick the
prints onto. Its first page is the whole grid shrunk to the page, every
row and column numbered, the target faint underneath; the next pages are
the grid at full size (cells ``tile_cm`` wide), cut into pages, each cell
outlined and labelled and the target faint inside it, each page naming
the rows and columns it holds.

Pages are drawn one at a time and appended to the PDF (Pillow's PDF
writer), so a board of thousands of photos needs one page of memory; the
file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import MosaicistError, alternatives, range_wording
from ..imaging import _DECODE_ERRORS, thumbnail
from ..paths import atomic_path
from ._event import Event, Photo, _read_rgb, fade

#: Paper sizes, (width, height) in millimetres.
PAPERS = {"a4": (210.0, 297.0), "letter": (215.9, 279.4)}
#: Margin of every page, in millimetres.
MARGIN_MM = 10.0
#: Space between two photos on a sheet, and the label's height under each, in millimetres.
GUTTER_MM = 4.0
LABEL_MM = 6.0
#: Resolutions of the sheets and of the underlay, in dots per inch.
SHEET_DPI = 300
UNDERLAY_DPI = 150
#: JPEG quality of the pages inside the PDF.
PAGE_QUALITY = 90
#: Tile widths accepted, in centimetres.
TILE_CM_RANGE = (1.0, 30.0)
#: The refusal of print sheets for a wall without photos.
NOTHING_TO_PRINT = "there is nothing to print: no photo is on the wall"


def _px(mm: float, dpi: int) -> int:
    return round(mm / 25.4 * dpi)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def label(cell: int, cols: int) -> str:
    """``R<row> C<col>`` of a cell, counted from 1 at the top left."""
    row, col = divmod(cell, cols)
    return f"R{row + 1} C{col + 1}"


def _check(paper: str, tile_cm: float) -> tuple[float, float]:
    if paper not in PAPERS:
        raise MosaicistError(f"unknown paper {paper!r}; use {alternatives(PAPERS)}")
    low, high = TILE_CM_RANGE
    if not (low <= tile_cm <= high) or not math.isfinite(tile_cm):
        raise MosaicistError(f"the tile width must be {range_wording(low, high, 'cm')}, "
                             f"got {tile_cm:g}")
    return PAPERS[paper]


def _write_pages(path: Path, pages: Iterator[Image.Image], dpi: int) -> int:
    """Append each page to a new PDF at ``path`` (atomically); return the page count."""
    count = 0
    with atomic_path(path) as temporary:
        for page in pages:
            page.save(temporary, "PDF", resolution=float(dpi), quality=PAGE_QUALITY,
                      append=count > 0)
            count += 1
        if not count:
            raise MosaicistError(NOTHING_TO_PRINT)
    return count


def _paper_name(paper: str) -> str:
    """``"A4"``, ``"Letter"``: a paper as people write it."""
    return paper.upper() if paper.startswith("a") else paper.capitalize()


def _too_large(what: str, tile_cm: float, paper: str, widest_cm: float, tallest_cm: float
               ) -> MosaicistError:
    """The error for a ``what`` (tile, cell) of ``tile_cm`` wider than a page allows.

    ``widest_cm`` and ``tallest_cm`` are the largest widths the page takes
    across and, by the tiles' shape, down.
    """
    shown = _paper_name(paper)
    article = "an" if shown[:1] in "AEIOU" else "a"
    return MosaicistError(f"a {tile_cm:g} cm {what} does not fit on {article} {shown} page; "
                          f"at most {math.floor(min(widest_cm, tallest_cm) * 10) / 10:g} cm")


def write_sheets(event: Event, path: Path, paper: str = "a4", tile_cm: float = 5.0,
                 dpi: int = SHEET_DPI, *, check_only: bool = False) -> int:
    """Write the print sheets of every placed photo to ``path`` (PDF); return the pages.

    With ``check_only``, only check what writing would check (raising the
    same errors), write nothing and return 0: the answer to ``HEAD``.

    Raises
    ------
    MosaicistError
        For an unknown paper, a tile size out of range or too large for the
        page, or a wall without photos.
    """
    page_w_mm, page_h_mm = _check(paper, tile_cm)
    options = event.settings.options
    tile_w = _px(tile_cm * 10, dpi)
    tile_h = round(tile_w * options.tile_height / options.tile_px)
    page_w, page_h = _px(page_w_mm, dpi), _px(page_h_mm, dpi)
    margin, gutter, label_h = _px(MARGIN_MM, dpi), _px(GUTTER_MM, dpi), _px(LABEL_MM, dpi)
    across = (page_w - 2 * margin + gutter) // (tile_w + gutter)
    down = (page_h - 2 * margin + gutter) // (tile_h + label_h + gutter)
    if across < 1 or down < 1:
        # The largest tile a page of this paper takes, across and down (labels included).
        raise _too_large("tile", tile_cm, paper, (page_w - 2 * margin) / dpi * 2.54,
                         (page_h - 2 * margin - label_h) / dpi * 2.54 * options.tile_px
                         / options.tile_height)
    photos = event.placed()
    if check_only:
        if not photos:
            raise MosaicistError(NOTHING_TO_PRINT)
        return 0
    per_page = across * down
    font = _font(max(10, label_h * 2 // 3))
    cols = event.settings.cols

    def pages() -> Iterator[Image.Image]:
        for first in range(0, len(photos), per_page):
            page = Image.new("RGB", (page_w, page_h), "white")
            draw = ImageDraw.Draw(page)
            for slot, photo in enumerate(photos[first:first + per_page]):
                row, col = divmod(slot, across)
                left = margin + col * (tile_w + gutter)
                top = margin + row * (tile_h + label_h + gutter)
                page.paste(Image.fromarray(_printed(event, photo, tile_w)), (left, top))
                draw.rectangle((left - 1, top - 1, left + tile_w, top + tile_h),
                               outline=(160, 160, 160), width=1)
                assert photo.cell is not None
                draw.text((left + tile_w // 2, top + tile_h + label_h // 2),
                          label(photo.cell, cols), fill="black", font=font, anchor="mm")
            yield page

    return _write_pages(path, pages(), dpi)


def _printed(event: Event, photo: Photo, width: int) -> np.ndarray:
    """A placed photo at ``width`` pixels, cut and tinted as on the wall.

    A stored photo that can no longer be read (damaged on disk, removed by
    hand) is printed as the wall shows it, enlarged, rather than failing
    the whole document.
    """
    options = event.settings.options
    assert photo.cell is not None
    try:
        picture = _read_rgb(event.picture_path(photo))
    except _DECODE_ERRORS:
        height = max(1, round(width * options.tile_height / options.tile_px))
        with event.lock:
            shown = event.shown_tile(photo)
        return np.asarray(Image.fromarray(shown).resize((width, height),
                                                        Image.Resampling.LANCZOS), np.uint8)
    pixels = thumbnail(picture, width, options.aspect_ratio, photo.window)
    return event.tinted(photo, photo.cell, pixels)


def write_underlay(event: Event, path: Path, paper: str = "a4", tile_cm: float = 5.0,
                   dpi: int = UNDERLAY_DPI, *, check_only: bool = False) -> int:
    """Write the underlay grid of the board to ``path`` (PDF); return the pages.

    With ``check_only``, only check what writing would check (raising the
    same errors), write nothing and return 0: the answer to ``HEAD``.

    Raises
    ------
    MosaicistError
        For an unknown paper, or a tile size out of range or too large for
        a cell to fit on the page at full size.
    """
    page_w_mm, page_h_mm = _check(paper, tile_cm)
    settings = event.settings
    options = settings.options
    cols, rows = settings.cols, settings.rows
    cell_w_mm = tile_cm * 10
    cell_h_mm = cell_w_mm * options.tile_height / options.tile_px
    page_w, page_h = _px(page_w_mm, dpi), _px(page_h_mm, dpi)
    margin = _px(MARGIN_MM, dpi)
    header = _px(8, dpi)
    usable_w, usable_h = page_w - 2 * margin, page_h - 2 * margin - header
    # Whole cells per page at full size. A cell larger than the page was drawn one to a
    # page and cut off at its edge: refused, as the print sheets refuse such a tile.
    across = int(usable_w // (cell_w_mm / 25.4 * dpi))
    down = int(usable_h // (cell_h_mm / 25.4 * dpi))
    if across < 1 or down < 1:
        raise _too_large("cell", tile_cm, paper, usable_w / dpi * 2.54,
                         usable_h / dpi * 2.54 * options.tile_px / options.tile_height)
    if check_only:
        return 0
    target = Image.fromarray(event.target)
    font = _font(max(9, _px(3.5, dpi)))
    title = _font(max(10, _px(4.5, dpi)))

    def overview() -> Image.Image:
        page = Image.new("RGB", (page_w, page_h), "white")
        draw = ImageDraw.Draw(page)
        label_room = _px(8, dpi)
        scale = min((usable_w - label_room) / cols, (usable_h - label_room) / (rows * cell_h_mm
                                                                            / cell_w_mm))
        cell_w, cell_h = scale, scale * cell_h_mm / cell_w_mm
        left, top = margin + label_room, margin + header + label_room
        picture = Image.fromarray(fade(np.asarray(target.resize(
            (max(1, round(cols * cell_w)), max(1, round(rows * cell_h))),
            Image.Resampling.LANCZOS))))
        page.paste(picture, (left, top))
        for col in range(cols + 1):
            x = round(left + col * cell_w)
            draw.line((x, top, x, round(top + rows * cell_h)), fill=(120, 120, 120), width=1)
        for row in range(rows + 1):
            y = round(top + row * cell_h)
            draw.line((left, y, round(left + cols * cell_w), y), fill=(120, 120, 120), width=1)
        step = max(1, math.ceil(font.getlength("000") / max(cell_w, 1e-9)))
        for col in range(0, cols, step):
            draw.text((left + (col + 0.5) * cell_w, top - label_room // 2), str(col + 1),
                      fill="black", font=font, anchor="mm")
        step = max(1, math.ceil(_px(3.5, dpi) / max(cell_h, 1e-9)))
        for row in range(0, rows, step):
            draw.text((left - label_room // 2, top + (row + 0.5) * cell_h), str(row + 1),
                      fill="black", font=font, anchor="mm")
        pieces = math.ceil(cols / across) * math.ceil(rows / down)
        draw.text((margin, margin), f"{settings.target_name}: {cols} x {rows} cells of "
                  f"{tile_cm:g} cm; the board at full size follows on {pieces} pages",
                  fill="black", font=title, anchor="la")
        return page

    def pieces() -> Iterator[Image.Image]:
        yield overview()
        cell_w = cell_w_mm / 25.4 * dpi
        cell_h = cell_h_mm / 25.4 * dpi
        for row0 in range(0, rows, down):
            for col0 in range(0, cols, across):
                page = Image.new("RGB", (page_w, page_h), "white")
                draw = ImageDraw.Draw(page)
                row1, col1 = min(rows, row0 + down), min(cols, col0 + across)
                draw.text((margin, margin),
                          f"rows {row0 + 1}-{row1}, columns {col0 + 1}-{col1}",
                          fill="black", font=title, anchor="la")
                top0 = margin + header
                for row in range(row0, row1):
                    for col in range(col0, col1):
                        x0 = round(margin + (col - col0) * cell_w)
                        y0 = round(top0 + (row - row0) * cell_h)
                        x1 = round(margin + (col - col0 + 1) * cell_w)
                        y1 = round(top0 + (row - row0 + 1) * cell_h)
                        piece = Image.fromarray(event.empty_cell(row * cols + col)).resize(
                            (max(1, x1 - x0), max(1, y1 - y0)), Image.Resampling.BILINEAR)
                        page.paste(piece, (x0, y0))
                        draw.rectangle((x0, y0, x1, y1), outline=(90, 90, 90), width=1)
                        draw.text(((x0 + x1) // 2, (y0 + y1) // 2),
                                  label(row * cols + col, cols), fill=(40, 40, 40), font=font,
                                  anchor="mm")
                yield page

    return _write_pages(path, pieces(), dpi)
