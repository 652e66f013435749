"""Batches: many targets, one library, one mosaic each; videos in and out.

``mosaicist batch TARGET... --tiles SOURCE -o OUTDIR`` (and
:func:`batch_mosaics`) makes, for every target, exactly the mosaic
``mosaicist make`` would make (the same bytes) into
``OUTDIR/<stem>.<format>``, indexing the library once and sharing it
(memory-mapped) between the workers of a local process pool or of a Dask
cluster. Targets are image files, folders of them, list files and the
frames of videos (:mod:`._targets`); a batch resumes where it stopped
(:mod:`._run`); its outputs can be encoded into a video, whose flicker the
temporal-stability option reduces (:mod:`._stable`, :mod:`._video`).
"""

from ._run import STATE_FOLDER, BatchResult, TargetResult, batch_mosaics, finished
from ._stable import (
    STRENGTH_RANGE,
    Picks,
    StableMatcher,
    discounted,
    library_fingerprint,
    stable_frame,
    stable_mosaic,
)
from ._targets import (
    LIST_SUFFIXES,
    VIDEO_SUFFIXES,
    BatchTarget,
    Rejected,
    collect_targets,
    frame_stem,
)
from ._video import (
    VideoInfo,
    VideoWritten,
    cell_changes,
    mean_change,
    read_frames,
    video_codec,
    video_info,
    write_video,
)

__all__ = [
    "LIST_SUFFIXES",
    "STATE_FOLDER",
    "STRENGTH_RANGE",
    "VIDEO_SUFFIXES",
    "BatchResult",
    "BatchTarget",
    "Picks",
    "Rejected",
    "StableMatcher",
    "TargetResult",
    "VideoInfo",
    "VideoWritten",
    "batch_mosaics",
    "cell_changes",
    "collect_targets",
    "discounted",
    "finished",
    "frame_stem",
    "library_fingerprint",
    "mean_change",
    "read_frames",
    "stable_frame",
    "stable_mosaic",
    "video_codec",
    "video_info",
    "write_video",
]
