"""The wall at full resolution: PNG, TIFF and Deep Zoom exports, drawn by the package's renderer.

Each placed photo's tile is drawn as shown on the display (its tile file:
cut, sized and tinted for its cell); an empty cell shows the target faded
(:func:`._event.fade`). The picture goes through
:class:`mosaicist.render.MosaicRenderer` and the writers of
:data:`mosaicist.render.OUTPUT_FORMATS`, band by band, to a file written
atomically in the event's ``exports`` folder; a Deep Zoom pyramid (with its
viewer page) is zipped.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import MosaicistError
from ..paths import atomic_path
from ..placements import Placements
from ..render import MosaicRenderer, TilePictures
from ._event import Event, Photo

#: Export formats: name -> file name in the exports folder.
EXPORTS = {"png": "wall.png", "tiff": "wall.tif", "dzi": "wall-deepzoom.zip"}


class ExportFailed(MosaicistError):
    """The wall could not be written to the event's ``exports`` folder.

    The server's fault, not the request's: answered with status 500 and
    logged on the server's terminal, where the host can act on it.
    """

    http_status = 500


def _disk_full(error: BaseException) -> OSError | None:
    """The full-disk :class:`OSError` behind ``error``, if that is what it comes from.

    The writers turn an :class:`OSError` into a :class:`MosaicistError`
    naming their file (``raise ... from None`` for the command line's one
    line), which keeps the original as its context.
    """
    seen: BaseException | None = error
    for _ in range(8):  # a short chain; never loop on a cycle
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class WallPictures(TilePictures):
    """Each cell's picture as shown: its photo's tile file, or the faded target.

    Parameters
    ----------
    event : Event
        The wall.
    photos : list of Photo or None
        The photo of each cell (row-major), taken at one moment.
    """

    def __init__(self, event: Event, photos: list[Photo | None]) -> None:
        self.event = event
        self.photos = photos
        self.tile_px, self.tile_height = event.settings.tile_size

    def fetch(self, cells: np.ndarray) -> np.ndarray:
        out = np.empty((len(cells), self.tile_height, self.tile_px, 3), np.uint8)
        for slot, cell in enumerate(np.asarray(cells).tolist()):
            photo = self.photos[cell]
            picture = None
            if photo is not None:
                try:
                    with Image.open(self.event.tile_path(photo)) as image:
                        picture = np.asarray(image.convert("RGB"), np.uint8)
                except OSError:
                    picture = None  # moved or removed since: the cell shows as empty
            if picture is None or picture.shape[:2] != (self.tile_height, self.tile_px):
                picture = self.event.empty_cell(cell)
            out[slot] = picture
        return out


def wall_renderer(event: Event) -> MosaicRenderer:
    """A renderer of the wall as it is now."""
    settings = event.settings
    photos: list[Photo | None] = [None] * settings.cells
    for photo in event.placed():
        assert photo.cell is not None
        photos[photo.cell] = photo
    count = settings.cells
    placements = Placements(settings.rows, settings.cols, np.arange(count),
                            np.zeros(count, np.int64),
                            ["" if photo is None else photo.id for photo in photos],
                            options=settings.options)
    return MosaicRenderer(placements, WallPictures(event, photos))


def export_wall(event: Event, kind: str) -> Path:
    """Write the wall as it is now in ``kind`` (``png``, ``tiff``, ``dzi``); return the file.

    One export runs at a time per event; the file replaces the previous one atomically.

    Raises
    ------
    OSError
        ``ENOSPC`` when the disk is full (the server answers 507, as for an
        upload that finds the disk full).
    ExportFailed
        When the file cannot be written for another reason.
    """
    try:
        return _export(event, kind)
    except MosaicistError as error:
        # The writers' errors are the command line's ("PATH: cannot write output: ..."); as
        # they are, the server answered them 400, as if the host had asked for something
        # wrong, and said nothing on its terminal.
        full = _disk_full(error)
        if full is not None:
            raise OSError(full.errno, f"the disk is full: the {kind} export cannot be "
                                      "written") from error
        raise ExportFailed(f"the {kind} export could not be written: {error}") from error


def _export(event: Event, kind: str) -> Path:
    name = EXPORTS[kind]
    final = event.exports_folder / name
    with event.export_lock:
        renderer = wall_renderer(event)
        options = event.settings.options
        if kind != "dzi":
            renderer.write(final, options)
            return final
        staging = Path(tempfile.mkdtemp(prefix=".deepzoom-", dir=event.exports_folder))
        try:
            renderer.write(staging / "wall.dzi", options)
            with atomic_path(final) as temporary, zipfile.ZipFile(
                temporary, "w", zipfile.ZIP_STORED, allowZip64=True
            ) as archive:
                for path in sorted(staging.rglob("*")):
                    if path.is_file():
                        archive.write(path, path.relative_to(staging).as_posix())
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final
