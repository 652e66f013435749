"""Embedded ICC colour profiles: pictures in another colour space converted to sRGB.

Photos from phones (Display P3), cameras (Adobe RGB) and scans carry an ICC
profile; the values Pillow decodes are in that profile's space, and taken as
sRGB they come out desaturated or shifted against any colour-managed viewer.
:func:`to_srgb` converts such a picture with LittleCMS (Pillow's
:mod:`PIL.ImageCms`), once it is decoded and before it is cut or resized.

Whether profiles are applied is the ``colour_profiles`` setting
(:data:`COLOUR_PROFILE_MODES`): ``ignore``, the declared default and the
seed's method (OpenCV, the seed's reader, ignores them), or ``convert``, the
default preset's. :mod:`mosaicist.imaging` passes it to every decode:
targets, tiles and re-read originals alike.

- The intent is relative colorimetric with black point compensation: what
  browsers and image viewers use to show a picture's profile, and Photoshop's
  default. The profiles of photos are matrix-shaper profiles, for which
  perceptual and colorimetric intents are the same transform anyway; for a
  CMYK profile's tables, black point compensation keeps the picture's black
  black rather than the paper's grey.
- A profile whose transform changes no value by more than one level (sRGB
  itself, in any of its many encodings) is not applied: such pictures keep
  exactly the pixels they had, and cost nothing more.
- One transform per distinct profile (by a hash of its bytes) is built and
  kept for the process; the sRGB test above is made once with it.
- A profile LittleCMS cannot read leaves the picture as it was decoded, as
  with ``ignore``; a warning is logged once a process, and
  :func:`skipped_profiles` counts such profiles. One whose colour space is not
  the picture's (a greyscale profile on an RGB picture) is left unapplied
  without a word.
- Modes converted: ``RGB`` (after transparency is composited over white),
  ``CMYK`` (through its profile, instead of Pillow's plain conversion) and
  greyscale of every kind (``L``, and bilevel, 16- and 32-bit, float or with
  alpha once made 8-bit grey as :mod:`mosaicist.imaging` makes it, alpha
  composited over white) through a grey profile. Any mode made RGB goes
  through an RGB profile; a profile of another space than the picture's is
  left unapplied.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

import numpy as np
from PIL import Image, ImageCms

from .errors import OptionError, alternatives

_LOG = logging.getLogger(__name__)

#: Values of the ``colour_profiles`` setting: ``ignore`` (the stored values taken as
#: sRGB, as the seed's reader does) and ``convert`` (embedded profiles applied).
COLOUR_PROFILE_MODES = ("ignore", "convert")

def check_colour_profiles(value: object) -> None:
    """Refuse a ``colour_profiles`` value other than those of :data:`COLOUR_PROFILE_MODES`.

    Raises
    ------
    OptionError
        Naming the setting and the values it takes.
    """
    if value not in COLOUR_PROFILE_MODES:
        raise OptionError("unknown {colour_profiles} {value!r}; use {known}", value=value,
                          known=alternatives(COLOUR_PROFILE_MODES))


#: LittleCMS's relative colorimetric intent (``ImageCms.Intent.RELATIVE_COLORIMETRIC``).
#: Plain numbers: ``ImageCms.Flags`` is newer than the Pillow 10.2 we support.
_INTENT: Any = 1
#: ``cmsFLAGS_BLACKPOINTCOMPENSATION`` | ``cmsFLAGS_NOCACHE``: without the one-pixel
#: cache a transform may be applied by several threads at once (render threads do).
_FLAGS: Any = 0x2000 | 0x0040

#: A profile's colour space (bytes 16..20 of its header) -> the Pillow mode it applies to.
_MODES = {b"RGB ": "RGB", b"CMYK": "CMYK", b"GRAY": "L"}

#: Levels a transform may move a value by and still count as sRGB's own.
_SRGB_TOLERANCE = 1

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))

_lock = threading.Lock()
#: Profile digest -> its transform, or None when it is sRGB or cannot be used.
_transforms: dict[bytes, ImageCms.ImageCmsTransform | None] = {}
_skipped = 0
_warned = False


def skipped_profiles() -> int:
    """How many distinct profiles this process could not apply (damaged or unsupported)."""
    return _skipped


def _probe(mode: str) -> Image.Image:
    """Values spread over the space of ``mode``, to tell an sRGB profile by its transform."""
    levels = np.linspace(0, 255, 16).round().astype(np.uint8)
    if mode == "L":
        return Image.fromarray(np.arange(256, dtype=np.uint8)[None, :], "L")
    channels = 4 if mode == "CMYK" else 3
    grid = np.stack(np.meshgrid(*[levels] * channels, indexing="ij"), axis=-1)
    return Image.frombytes(mode, (grid.size // channels, 1), grid.tobytes())


def _is_identity(transform: ImageCms.ImageCmsTransform, mode: str) -> bool:
    """Whether ``transform`` moves no probed value by over a level (an sRGB or sRGB-grey profile).

    A CMYK profile never is: its pictures always go through it.
    """
    if mode == "CMYK":
        return False
    probe = _probe(mode)
    out = ImageCms.applyTransform(probe, transform)
    assert out is not None  # not in place: a new image
    stored = np.asarray(probe.convert("RGB"), np.int16)
    difference = np.abs(np.asarray(out, np.int16) - stored)
    return int(difference.max()) <= _SRGB_TOLERANCE


def note_unusable_profile(reason: str) -> None:
    """Count a profile a reader dropped as damaged, with the warning of :func:`skipped_profiles`.

    Parameters
    ----------
    reason : str
        What is wrong with it, as the warning words it after "a picture's ICC
        colour profile" (``"is damaged"``).
    """
    _skip(reason)


def _skip(reason: str) -> None:
    global _skipped, _warned
    _skipped += 1
    if not _warned:
        _warned = True
        _LOG.warning("mosaicist: warning: a picture's ICC colour profile %s; pictures "
                     "carrying it are read without colour management", reason)


def _build(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform of ``profile`` for pictures of ``mode`` to sRGB, or None to leave them."""
    try:
        source = ImageCms.ImageCmsProfile(ImageCms.core.profile_frombytes(profile))
        transform = ImageCms.buildTransform(source, _SRGB, mode, "RGB",
                                            renderingIntent=_INTENT, flags=_FLAGS)
        if _is_identity(transform, mode):
            return None
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as error:
        _skip(f"cannot be used ({str(error).strip() or type(error).__name__})")
        return None
    return transform


def _transform(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    key = hashlib.blake2b(profile, digest_size=16).digest() + mode.encode()
    try:
        return _transforms[key]
    except KeyError:
        pass
    with _lock:
        if key not in _transforms:
            _transforms[key] = _build(profile, mode)
        return _transforms[key]


def profile_of(image: Image.Image) -> bytes | None:
    """``image``'s embedded ICC profile, or None."""
    profile = image.info.get("icc_profile")
    return profile if isinstance(profile, bytes) and len(profile) >= 128 else None


def is_rgb_profile(profile: bytes | None) -> bool:
    """Whether ``profile`` is an RGB picture's (its header's colour space)."""
    return profile is not None and profile[16:20] == b"RGB "


def is_grey_profile(profile: bytes | None) -> bool:
    """Whether ``profile`` is a greyscale picture's (its header's colour space)."""
    return profile is not None and profile[16:20] == b"GRAY"


#: Pillow's greyscale modes but those of 16 bits (``I;16`` and its byte orders, told by
#: their prefix): a grey profile applies to them once they are 8-bit grey.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})


def is_grey_mode(mode: str) -> bool:
    """Whether pictures of Pillow's ``mode`` are greyscale: bilevel, 8 to 32 bits, alpha or not."""
    return mode in _GREY_MODES or mode.startswith("I;16")


def to_srgb(image: Image.Image, profile: bytes | None, *, in_place: bool = False) -> Image.Image:
    """``image`` (mode ``RGB``, ``CMYK`` or ``L``) converted from ``profile`` to sRGB.

    Parameters
    ----------
    image : PIL.Image.Image
        A loaded picture.
    profile : bytes or None
        Its ICC profile (``image.info["icc_profile"]`` as decoded).
    in_place : bool
        Convert an ``RGB`` image's own pixels (no second copy of a large
        picture); only for an image the caller made.

    Returns
    -------
    PIL.Image.Image
        A new ``RGB`` image; ``image`` itself when there is no profile, it is
        sRGB's, or it cannot be applied (see the module docstring).
    """
    if not profile or len(profile) < 128 or _MODES.get(profile[16:20]) != image.mode:
        return image  # none, or one for another colour space than the picture's
    transform = _transform(profile, image.mode)
    if transform is None:
        return image
    try:
        if in_place and image.mode == "RGB":
            ImageCms.applyTransform(image, transform, inPlace=True)
            return image
        converted = ImageCms.applyTransform(image, transform)
    except (ImageCms.PyCMSError, ValueError) as error:
        _skip(f"could not be applied ({error})")
        return image
    return image if converted is None else converted


def jpeg_profile(data: bytes) -> bytes | None:
    """The ICC profile of a JPEG's header (its ``APP2`` chunks joined), or None.

    Only the segments before the first scan are walked, so a JPEG without a
    profile costs a few byte comparisons. Chunks are joined in their sequence
    numbers' order, as Pillow does.
    """
    chunks: list[tuple[int, bytes]] = []
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            break
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        if marker in (0xDA, 0xD9):
            break
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if length < 2:
            break
        if marker == 0xE2 and data[position + 4:position + 16] == b"ICC_PROFILE\x00":
            chunks.append((data[position + 16], data[position + 18:position + 2 + length]))
        position += 2 + length
    if not chunks:
        return None
    chunks.sort(key=lambda chunk: chunk[0])
    return b"".join(chunk for _, chunk in chunks)


def usual_colour_profiles(crop_method: str) -> str:
    """The ``colour_profiles`` value the presets that crop by ``crop_method`` use.

    ``ignore`` for centred crops (``--preset seed``), ``convert`` for crops on the
    subject (``subject``, or ``detail`` without a face detector: the default
    preset). Tile indexes of these pairs keep the folders they had; the others
    get folders of their own (:mod:`mosaicist.library`).

    Parameters
    ----------
    crop_method : str
        What a crop does here (:func:`mosaicist.crop.crop_method`), or the crop
        setting itself.
    """
    return "ignore" if crop_method == "centre" else "convert"


def converts(mode: str, keyed: bool, profile: bytes | None) -> bool:
    """Whether a picture of ``mode`` carrying ``profile`` decodes otherwise when converted.

    Mirrors :func:`mosaicist.imaging.to_rgb`: a ``CMYK`` picture through its
    own CMYK profile; a greyscale one of any kind (:func:`is_grey_mode`)
    through a grey profile, once 8-bit grey; else through an RGB profile once
    the picture is RGB. A profile that is sRGB's, cannot be read, or is of
    another colour space changes nothing.

    Parameters
    ----------
    mode : str
        The picture's Pillow mode, as opened.
    keyed : bool
        Whether it has a transparent colour key (``tRNS``), composited first
        (the profile applies all the same: kept for callers that pass it).
    profile : bytes or None
        Its embedded profile.
    """
    del keyed  # composited over white first; the profile applies to the result alike
    if not profile or len(profile) < 128:
        return False
    space = _MODES.get(profile[16:20])
    if mode == "CMYK" and space == "CMYK":
        return _transform(profile, "CMYK") is not None
    if space == "L" and is_grey_mode(mode):
        return _transform(profile, "L") is not None
    return space == "RGB" and _transform(profile, "RGB") is not None
