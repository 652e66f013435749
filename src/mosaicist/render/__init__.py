"""Rendering: placements -> the picture, streamed to any output format.

A :class:`MosaicRenderer` draws placements one row of cells at a time, from
the index (:class:`IndexPictures`) or from the original photos at any size
(:class:`OriginalPictures`), applying transforms, tints and the overlay
(:class:`TargetOverlay`). Its bands go to a writer chosen by the output's
suffix from one table, :data:`OUTPUT_FORMATS`:

===============  ==========  =============================================
suffix           format      module
===============  ==========  =============================================
``.png``         PNG         :mod:`._writers` (parallel deflate)
``.jpg .jpeg``   JPEG        :mod:`._writers` (restart-marker splicing)
``.webp``        WEBP        :mod:`._writers` (encoded whole)
``.tif .tiff``   TIFF        :mod:`._writers` (tiled pyramidal BigTIFF)
``.dzi``         Deep Zoom   :mod:`._deepzoom` (pyramid + viewer page)
===============  ==========  =============================================

A new format is a subclass of :class:`OutputFormat` passed to
:func:`register_format`.
"""

from ._deepzoom import (
    DEEP_ZOOM,
    DeepZoomFormat,
    DeepZoomLayout,
    check_layout,
    files_folder,
    read_layout,
    read_level,
    write_deep_zoom,
)
from ._formats import (
    OUTPUT_FORMATS,
    OutputFormat,
    Picture,
    check_output,
    check_room,
    ignored_settings,
    output_format,
    register_format,
    write_output,
)
from ._overlay import TargetOverlay
from ._pictures import IndexPictures, OriginalPictures, TilePictures
from ._pyramid import HalvingStream, half_size, level_count, reduce_half
from ._renderer import (
    MosaicRenderer,
    changed_tiles,
    dress_tiles,
    placements_renderer,
    render_mosaic,
    render_placements,
    target_crop,
)
from ._writers import JPEG, PNG, TIFF, WEBP, RasterFormat, png_filter_rows, write_image

for _output in (PNG, JPEG, WEBP, TIFF, DEEP_ZOOM):
    register_format(_output)
del _output

__all__ = [
    "DEEP_ZOOM",
    "JPEG",
    "OUTPUT_FORMATS",
    "PNG",
    "TIFF",
    "WEBP",
    "DeepZoomFormat",
    "DeepZoomLayout",
    "HalvingStream",
    "IndexPictures",
    "MosaicRenderer",
    "OriginalPictures",
    "OutputFormat",
    "Picture",
    "RasterFormat",
    "TargetOverlay",
    "TilePictures",
    "check_layout",
    "check_output",
    "check_room",
    "dress_tiles",
    "files_folder",
    "half_size",
    "ignored_settings",
    "level_count",
    "output_format",
    "changed_tiles",
    "placements_renderer",
    "png_filter_rows",
    "read_layout",
    "read_level",
    "reduce_half",
    "register_format",
    "render_mosaic",
    "render_placements",
    "target_crop",
    "write_deep_zoom",
    "write_image",
    "write_output",
]
