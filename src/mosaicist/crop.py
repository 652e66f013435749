"""Where a photo is cut to make its tile: the crop window.

A tile has the aspect of the cells (``W:H``, :mod:`mosaicist.aspect`). Its
*window* is the largest rectangle of that aspect inside the photo (after
EXIF orientation): it spans the photo's whole width or whole height, so only
its position along the other side is chosen (:func:`window_size`). Two ways
of choosing it (the ``crop`` setting):

``centre``
    In the middle, rounding down: the seed's centre square at ``1:1``.
``subject``
    On the people, else on the detail:

    1. **Faces.** OpenCV's frontal-face Haar cascade (``alt``, which ships
       inside ``opencv-python-headless`` 4, the ``faces`` extra; nothing is
       downloaded) runs on a grey copy whose longer side is
       :data:`FACE_ANALYSIS_PX` (so faces under about a thirteenth of that
       side are not seen).
       Each face's box is grown by :data:`FACE_MARGIN` (hair above, chin
       below), and the window keeps whole the faces of largest total area
       that fit in it together (all of them when they fit), centred on them;
       when no face fits whole, it is centred on the largest.
    2. **Detail**, when no face is found or OpenCV is absent. On a grey copy
       whose longer side is :data:`SALIENCY_PX` (longer where the window
       would span fewer than :data:`SALIENCY_WINDOW_PX` of its pixels, as
       in a panorama), each pixel's detail is its
       gradient magnitude (``|dx| + |dy|``) above the copy's median one, so
       that a photo's usual texture counts for nothing and what stands out
       counts. The window goes where it holds the most detail: of the run of
       positions within :data:`PLATEAU` of that best total, the middle one.
       A subject smaller than the window is thus centred in it, a flat
       photo is cut in the middle, as ``centre`` would, and one of even
       texture (stripes, a checkerboard) about there. Fine random texture
       (noise, grain) is not even at the copy's scale: its windows' totals
       differ by a few percent by chance, more than :data:`PLATEAU`, and the
       window may go anywhere.

    A photo already of the tile's aspect is its own window under both, so
    square photos at ``1:1`` make the same tiles either way.

Windows are in the photo's own pixels, so the index stores them and a
render from the originals at any size cuts the same window
(:mod:`mosaicist.render`).
"""

from __future__ import annotations

import importlib.util
import math
import multiprocessing
import os
import sys
import threading
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from ._choices import CROP_MODES as CROP_MODES  # the crop setting's values, declared there
from ._forks import renew_locks_after_fork
from .aspect import SQUARE

#: Longer side of the grey copy faces are looked for in.
FACE_ANALYSIS_PX = 320
#: Smallest face looked for, as a fraction of the copy's shorter side (and at least
#: the cascade's own 24 pixels).
MIN_FACE_FRACTION = 0.08
#: How far each detected face box is grown before it must fit: (left, top, right,
#: bottom) as fractions of its width or height; the cascade's box runs from the
#: eyebrows to the mouth, and "whole" means forehead, hair and chin too.
FACE_MARGIN = (0.2, 0.45, 0.2, 0.25)
#: Longer side of the grey copy detail is measured on.
SALIENCY_PX = 96
#: Fewest pixels of that copy the window spans along the side it slides on: the copy is
#: made larger (up to the photo's own size) where the window would span fewer.
SALIENCY_WINDOW_PX = 16
#: Positions whose window holds at least ``1 - PLATEAU`` of the most detail tie.
PLATEAU = 0.02

#: The cascade: of those OpenCV ships, the one with the fewest false faces on the
#: test set of ``benchmarks/bench_crops.py`` (2 in 250 photos, every real face found).
_FACE_CASCADE = "haarcascade_frontalface_alt.xml"


class Window(NamedTuple):
    """A crop window in a photo's pixels (after EXIF orientation)."""

    left: int
    top: int
    width: int
    height: int


def window_size(width: int, height: int, aspect: tuple[int, int] = SQUARE) -> tuple[int, int]:
    """Size of the largest window of ``aspect`` inside a ``width`` x ``height`` photo.

    The window spans the whole width or the whole height; its other side is
    rounded to the nearest pixel (at least one, at most the photo's).

    Examples
    --------
    >>> window_size(600, 400, (1, 1)), window_size(600, 400, (2, 3)), window_size(600, 200, (3, 2))
    ((400, 400), (267, 400), (300, 200))
    """
    aspect_width, aspect_height = aspect
    if width * aspect_height >= height * aspect_width:
        # Wider than the aspect: the window is as high as the photo.
        inner = (2 * height * aspect_width + aspect_height) // (2 * aspect_height)
        return min(width, max(1, inner)), height
    inner = (2 * width * aspect_height + aspect_width) // (2 * aspect_width)
    return width, min(height, max(1, inner))


def centre_window(width: int, height: int, aspect: tuple[int, int] = SQUARE) -> Window:
    """The largest window of ``aspect``, centred (offsets rounded down).

    At ``1:1`` this is the seed's centre square.
    """
    window_width, window_height = window_size(width, height, aspect)
    return Window((width - window_width) // 2, (height - window_height) // 2,
                  window_width, window_height)


def choose_window(image: Image.Image, aspect: tuple[int, int] = SQUARE,
                  crop: str = "centre") -> Window:
    """Return the crop window of ``image`` (a picture of any mode) for ``crop``.

    Parameters
    ----------
    image : PIL.Image.Image
        The photo, EXIF orientation applied (at any scale: the window is in
        its pixels), of any mode (16-bit grey, bilevel, with alpha: read as
        :func:`~mosaicist.imaging.to_rgb` reads it).
    aspect : (int, int)
        The tile's aspect, ``(width, height)``.
    crop : {"centre", "subject"}
        How to place the window (see the module docstring).

    Returns
    -------
    Window
        Whole pixels, inside the image.
    """
    width, height = image.size
    if crop == "centre":
        return centre_window(width, height, aspect)
    if crop != "subject":
        raise ValueError(f"unknown crop mode {crop!r}")
    window_width, window_height = window_size(width, height, aspect)
    if (window_width, window_height) == (width, height):
        return Window(0, 0, width, height)
    if image.mode not in ("RGB", "L"):
        # 16-bit grey cannot be box-reduced (Pillow raises), and a bilevel or paletted
        # copy is reduced by nearest pixels: the detail would be misread or refused.
        from .imaging import to_rgb

        image = to_rgb(image)
    along_x = window_width < width
    slack = width - window_width if along_x else height - window_height
    start = _subject_start(image, along_x, window_width if along_x else window_height)
    start = min(slack, max(0, start))
    if along_x:
        return Window(start, 0, window_width, window_height)
    return Window(0, start, window_width, window_height)


def scale_window(window: Window, size: tuple[int, int], original: tuple[int, int],
                 aspect: tuple[int, int]) -> Window:
    """Carry a window chosen on a reduced copy (``size``) to the original's pixels.

    The result is the original's largest window of ``aspect``, at the scaled
    position rounded to whole pixels and kept inside.
    """
    width, height = original
    window_width, window_height = window_size(width, height, aspect)
    left = round(window.left * width / max(1, size[0]))
    top = round(window.top * height / max(1, size[1]))
    return Window(min(max(0, left), width - window_width), min(max(0, top), height - window_height),
                  window_width, window_height)


def crop_method(crop: str) -> str:
    """What ``crop`` does here: ``centre``, ``subject`` (faces, then detail) or ``detail``.

    ``detail`` is ``subject`` where OpenCV's face detector is not installed.
    Indexes are kept per method, so installing the ``faces`` extra makes
    the next index a face-aware one rather than mixing the two.
    """
    if crop == "subject" and not face_detector_available():
        return "detail"
    return crop


# -- the subject --------------------------------------------------------------------------


def _subject_start(image: Image.Image, along_x: bool, length: int) -> int:
    """Start, in image pixels, of a window of ``length`` along the free side."""
    full = image.size[0] if along_x else image.size[1]
    grey = _grey_copy(image, FACE_ANALYSIS_PX)
    faces = detect_faces(grey)
    if faces is not None and len(faces):
        scale = (grey.shape[1] if along_x else grey.shape[0]) / full
        centre = _faces_centre(faces, grey.shape, along_x, length * scale)
        return round(centre / scale - length / 2)
    # A panorama reduced to 96 pixels long is a pixel or two high, and its window a
    # pixel or two wide there: placed that coarsely, a subject at one end is missed
    # (or the copy, under two pixels, reads as flat and is cut in the middle).
    longest = max(image.size)
    detail_px = min(longest, max(SALIENCY_PX, math.ceil(longest * SALIENCY_WINDOW_PX / length)))
    small = grey if max(grey.shape) == detail_px else _grey_copy(image, detail_px)
    scale = (small.shape[1] if along_x else small.shape[0]) / full
    start = _detail_start(small, along_x, length * scale)
    if start is None:
        return (full - length) // 2
    return round(start / scale)


def _grey_copy(image: Image.Image, longest: int) -> np.ndarray:
    """A float32 grey copy of ``image`` whose longer side is at most ``longest``."""
    width, height = image.size
    factor = max(width, height) / longest
    copy = image
    if factor > 1:
        size = (max(1, round(width / factor)), max(1, round(height / factor)))
        # Box averaging: every photo pixel counts once, no ringing to read as detail.
        copy = image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)
    return np.asarray(copy.convert("L"), dtype=np.float32)


def _detail_start(grey: np.ndarray, along_x: bool, length: float) -> float | None:
    """Start (in ``grey``'s pixels) of the window holding the most detail, or None if flat."""
    size = grey.shape[1] if along_x else grey.shape[0]
    # At least one pixel: a photo far longer than the copy is wide along its free side
    # (a 97 x 1500 photo at 16:1) leaves its window under half a pixel of the copy.
    window = max(1, int(round(length)))
    if size - window < 1 or min(grey.shape) < 2:
        return None
    magnitude = (np.abs(np.diff(grey, axis=1))[:-1, :] + np.abs(np.diff(grey, axis=0))[:, :-1])
    detail = np.maximum(magnitude - np.median(magnitude), 0.0)
    # Each difference sits between two pixels: give it to the first, and none to the last.
    profile = np.zeros(size, np.float64)
    profile[:-1] = detail.sum(axis=0 if along_x else 1)
    cumulative = np.concatenate([[0.0], np.cumsum(profile)])
    totals = cumulative[window:] - cumulative[:-window]
    best = float(totals.max())
    if best <= 0:
        return None
    near = totals >= best * (1 - PLATEAU)
    peak = int(np.argmax(totals))
    # The run of near-best positions around the best one; its middle.
    before = np.flatnonzero(~near[:peak])
    after = np.flatnonzero(~near[peak:])
    first = int(before[-1]) + 1 if len(before) else 0
    last = peak + int(after[0]) - 1 if len(after) else len(near) - 1
    return (first + last) / 2


def _faces_centre(faces: np.ndarray, shape: tuple[int, ...], along_x: bool,
                  length: float) -> float:
    """Centre, along the free side, of the window around the faces (in ``shape``'s pixels).

    ``faces`` are ``(x, y, w, h)`` boxes. Each grows by :data:`FACE_MARGIN`
    and is clipped to the picture; the window keeps the set of faces of
    largest total area that fits it, centred on them, else the largest face.
    """
    x, y, w, h = (faces[:, index].astype(np.float64) for index in range(4))
    left, top, right, bottom = FACE_MARGIN
    if along_x:
        start = np.maximum(0.0, x - left * w)
        end = np.minimum(float(shape[1]), x + w + right * w)
    else:
        start = np.maximum(0.0, y - top * h)
        end = np.minimum(float(shape[0]), y + h + bottom * h)
    area = w * h
    # Some best window starts at a face's start or ends at a face's end.
    candidates = np.concatenate([start, end - length])
    inside = (start[None, :] >= candidates[:, None] - 1e-9) & (
        end[None, :] <= candidates[:, None] + length + 1e-9)
    covered = (inside * area[None, :]).sum(axis=1)
    best = int(np.argmax(covered))
    if covered[best] <= 0:
        largest = int(np.argmax(area))
        return float((start[largest] + end[largest]) / 2)
    kept = inside[best]
    return float((start[kept].min() + end[kept].max()) / 2)


# -- faces --------------------------------------------------------------------------------

_detector_lock = threading.Lock()
renew_locks_after_fork(globals(), "_detector_lock")
_detector: dict[int, Any] = {}


def _load_detector() -> Any | None:
    """The frontal-face cascade of this process and thread, or None without OpenCV.

    OpenCV's classifiers are not safe to share between threads, hence one per
    thread. In a decoding worker process OpenCV gets one thread: the workers
    already use every core.
    """
    key = threading.get_ident()
    with _detector_lock:
        if key in _detector:
            return _detector[key]
    detector = None
    try:
        import cv2  # type: ignore[import-not-found, import-untyped, unused-ignore]

        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if folder is not None and hasattr(cv2, "CascadeClassifier"):
            classifier = cv2.CascadeClassifier(folder + _FACE_CASCADE)
            if not classifier.empty():
                detector = classifier
                if multiprocessing.parent_process() is not None:
                    cv2.setNumThreads(1)
    except ImportError:
        detector = None
    with _detector_lock:
        _detector[key] = detector
    return detector


def face_detector_available() -> bool:
    """Whether faces can be found: OpenCV (4.x, whose package ships the Haar cascades).

    Answered from the installed files while OpenCV is not imported yet: importing it
    takes a tenth of a second, which every index and mosaic paid only to name its
    index folder (:func:`crop_method`) even when all its tiles were indexed already.
    """
    if "cv2" not in sys.modules and not _detector:
        return _face_cascade_installed()
    return _load_detector() is not None


def _face_cascade_installed() -> bool:
    """Whether OpenCV is installed with its frontal-face cascade, without importing it.

    The cascade is where ``cv2.data.haarcascades`` names it: the ``data`` folder of
    the ``cv2`` package (opencv-python 4; builds without it find no faces).
    """
    try:
        spec = importlib.util.find_spec("cv2")
    except (ImportError, ValueError):  # a broken installation, or a stand-in module
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(os.path.isfile(os.path.join(folder, "data", _FACE_CASCADE))
               for folder in spec.submodule_search_locations)


def detect_faces(grey: np.ndarray) -> np.ndarray | None:
    """Find frontal faces in a grey picture.

    Parameters
    ----------
    grey : numpy.ndarray
        ``(H, W)`` grey levels 0..255 (any real type), a reduced copy.

    Returns
    -------
    numpy.ndarray or None
        ``(K, 4)`` int boxes ``(x, y, w, h)`` in ``grey``'s pixels (K may be
        0); None when no face detector is installed.
    """
    detector = _load_detector()
    if detector is None:
        return None
    shortest = min(grey.shape[:2])
    smallest = max(24, math.ceil(shortest * MIN_FACE_FRACTION))
    if shortest < 2 * smallest:
        # A face would fill most of the picture: any window keeps most of it,
        # and thumbnails (CIFAR's 32 px) are not worth the cascade's time.
        return np.zeros((0, 4), np.int64)
    found = detector.detectMultiScale(
        np.ascontiguousarray(np.clip(grey, 0, 255).astype(np.uint8)),
        scaleFactor=1.1, minNeighbors=3, minSize=(smallest, smallest),
    )
    return np.asarray(found, np.int64).reshape(-1, 4)
