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
- A picture whose colour space is declared by code points (ITU-T H.273) instead
  of an ICC profile, as HEIC and AVIF photos from phones do in an ``nclx``
  box (pillow-heif's ``info["nclx_profile"]``; for AVIF, which Pillow does not
  expose, :mod:`mosaicist.imaging` reads the box), is converted through the
  matrix/curve ICC profile those codes describe (:func:`nclx_profile`), then
  exactly as a picture carrying that profile. An ICC profile, where a picture
  has both, wins (as in libheif and libavif). Primaries: those H.273 defines
  by chromaticities (BT.709 = sRGB's, BT.470, BT.601, BT.2020, DCI-P3,
  Display P3, film, EBU 3213), their white adapted to D50 by Bradford as
  LittleCMS's own sRGB is. Transfers: the sRGB curve; BT.709's (also BT.601's
  and BT.2020's) as the exact inverse of its camera curve, as Skia and Chrome
  decode it, not a display gamma approximating it; gamma 2.2 and 2.8 (BT.470);
  SMPTE 240M; linear; SMPTE 428's 2.6. Unspecified or reserved codes are
  taken as sRGB's, as libheif takes them. High dynamic range transfers (PQ,
  HLG) and the codes left (logarithmic, XYZ primaries) are not converted: the
  stored values are taken as sRGB, with one warning a process.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import struct
import threading
from typing import Any

import numpy as np
from PIL import Image, ImageCms

from ._choices import COLOUR_PROFILE_MODES
from ._forks import renew_locks_after_fork
from .errors import OptionError, alternatives

_LOG = logging.getLogger(__name__)


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
renew_locks_after_fork(globals(), "_lock")
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
    """``image``'s ICC profile: the one it embeds, else the one its nclx codes describe, or None.

    The nclx codes are those of ``image.info["nclx_profile"]`` (see
    :func:`nclx_profile`); None too when they declare sRGB or a space that is
    not converted.
    """
    profile = image.info.get("icc_profile")
    if isinstance(profile, bytes) and len(profile) >= 128:
        return profile
    return nclx_profile(image.info.get("nclx_profile"))


#: ITU-T H.273 colour primaries -> red, green, blue and white CIE xy chromaticities
#: (the table of Skia's SkNamedPrimariesExt; 2 is "unspecified", taken as 1).
_NCLX_PRIMARIES: dict[int, tuple[tuple[float, float], ...]] = {
    1: ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060), (0.3127, 0.3290)),  # BT.709, sRGB
    4: ((0.670, 0.330), (0.210, 0.710), (0.140, 0.080), (0.310, 0.316)),  # BT.470 M
    5: ((0.640, 0.330), (0.290, 0.600), (0.150, 0.060), (0.3127, 0.3290)),  # BT.470 B, G
    6: ((0.630, 0.340), (0.310, 0.595), (0.155, 0.070), (0.3127, 0.3290)),  # BT.601
    7: ((0.630, 0.340), (0.310, 0.595), (0.155, 0.070), (0.3127, 0.3290)),  # SMPTE 240M
    8: ((0.681, 0.319), (0.243, 0.692), (0.145, 0.049), (0.310, 0.316)),  # generic film
    9: ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046), (0.3127, 0.3290)),  # BT.2020
    11: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), (0.314, 0.351)),  # DCI-P3
    12: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), (0.3127, 0.3290)),  # Display P3
    22: ((0.630, 0.340), (0.295, 0.605), (0.155, 0.077), (0.3127, 0.3290)),  # EBU 3213
}

#: BT.709's camera curve inverted exactly (alpha 1.0992968..., beta 0.0180539...), as an
#: ICC parametric curve of type 3: Y = (aX + b)^g from X = d on, cX below (Skia's kRec709).
_BT709_CURVE = (1 / 0.45, 1 / 1.0992968268094429, 0.0992968268094429 / 1.0992968268094429,
                1 / 4.5, 0.081242858298635133)

#: ITU-T H.273 transfer characteristics -> the ICC parametric curve (function type, its
#: parameters) that decodes a stored value to linear light (2 is "unspecified": sRGB).
_NCLX_TRANSFERS: dict[int, tuple[int, tuple[float, ...]]] = {
    1: (3, _BT709_CURVE),  # BT.709
    4: (0, (2.2,)),  # BT.470 M
    5: (0, (2.8,)),  # BT.470 B, G
    6: (3, _BT709_CURVE),  # BT.601
    7: (3, (1 / 0.45, 0.899626676224, 0.100373323776, 0.25, 0.091286342118)),  # SMPTE 240M
    8: (0, (1.0,)),  # linear
    11: (3, _BT709_CURVE),  # IEC 61966-2-4 (xvYCC), BT.709's between 0 and 1
    13: (3, (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)),  # sRGB
    14: (3, _BT709_CURVE),  # BT.2020 10-bit
    15: (3, _BT709_CURVE),  # BT.2020 12-bit
    17: (1, (2.6, (52.37 / 48) ** (1 / 2.6), 0.0)),  # SMPTE 428: 48 cd/m² of 52.37 white
}

#: Codes of H.273 that say nothing (0 and 3 reserved, 2 unspecified): sRGB is assumed.
_NCLX_UNSPECIFIED = frozenset({0, 2, 3})
#: High dynamic range transfers, by their names in the warning.
_NCLX_HDR = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}

_nclx_warned = False


def _nclx_codes(nclx: object) -> tuple[int, int] | None:
    """The (primaries, transfer) codes of an nclx mapping, unspecified ones made sRGB's."""
    if not isinstance(nclx, dict):
        return None
    primaries = nclx.get("color_primaries")
    transfer = nclx.get("transfer_characteristics")
    if not isinstance(primaries, int) or not isinstance(transfer, int):
        return None
    return (1 if primaries in _NCLX_UNSPECIFIED else primaries,
            13 if transfer in _NCLX_UNSPECIFIED else transfer)


def nclx_profile(nclx: object) -> bytes | None:
    """The ICC profile of a colour space declared by ITU-T H.273 codes (an ``nclx`` box).

    Parameters
    ----------
    nclx : mapping or None
        With ``color_primaries`` and ``transfer_characteristics`` (pillow-heif's
        ``info["nclx_profile"]``; other keys are not looked at).

    Returns
    -------
    bytes or None
        An ICC v4 matrix/curve RGB profile; None for sRGB (BT.709 primaries
        with the sRGB curve, or codes left unspecified), for codes not
        converted (see the module docstring, :func:`note_unconverted_nclx`),
        or without codes.
    """
    codes = _nclx_codes(nclx)
    if codes is None or codes == (1, 13):
        return None
    return _nclx_icc(*codes)


def note_unconverted_nclx(nclx: object) -> None:
    """Warn, once a process, of nclx codes that declare a space :func:`nclx_profile` leaves.

    A high dynamic range transfer (PQ, HLG), or primaries or a transfer it
    does not know: such a picture is read as stored, its values taken as sRGB.

    Parameters
    ----------
    nclx : mapping or None
        A picture's ``info["nclx_profile"]`` (see :func:`nclx_profile`).
    """
    global _nclx_warned
    codes = _nclx_codes(nclx)
    if codes is None or _nclx_warned:
        return
    primaries, transfer = codes
    if transfer in _NCLX_HDR:
        what = f"a high dynamic range transfer, {_NCLX_HDR[transfer]}"
    elif transfer not in _NCLX_TRANSFERS:
        what = f"a transfer mosaicist does not convert (H.273 code {transfer})"
    elif primaries not in _NCLX_PRIMARIES:
        what = f"primaries mosaicist does not convert (H.273 code {primaries})"
    else:
        return
    _nclx_warned = True
    _LOG.warning("mosaicist: warning: a picture's colour space (declared by a HEIC or AVIF "
                 "nclx box) has %s; pictures declaring it are read without colour management",
                 what)


#: The ICC profile connection space's white, D50 (as its header and tags store it).
_D50 = (0.9642, 1.0, 0.8249)
#: Bradford's cone response matrix, as LittleCMS adapts whites with it.
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                      [0.0389, -0.0685, 1.0296]])


def _xy_to_xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


def _s15(values: Any) -> bytes:
    """ICC s15Fixed16Number values."""
    return b"".join(struct.pack(">i", round(float(value) * 65536)) for value in values)


def _mluc(text: str) -> bytes:
    """An ICC v4 multi-localised text tag of one English record."""
    encoded = text.encode("utf-16-be")
    return b"mluc\0\0\0\0" + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(encoded),
                                           28) + encoded


@functools.lru_cache(maxsize=64)  # codes read from files: a bounded few kept
def _nclx_icc(primaries: int, transfer: int) -> bytes | None:
    """The ICC v4 profile of H.273 ``primaries`` and ``transfer``, or None when either is left."""
    if primaries not in _NCLX_PRIMARIES or transfer not in _NCLX_TRANSFERS:
        return None
    *colours, white = _NCLX_PRIMARIES[primaries]
    columns = np.stack([_xy_to_xyz(*xy) for xy in colours], axis=1)
    white_xyz = _xy_to_xyz(*white)
    to_xyz = columns * np.linalg.solve(columns, white_xyz)  # white (1, 1, 1) -> white_xyz
    cones = np.diag((_BRADFORD @ np.array(_D50)) / (_BRADFORD @ white_xyz))
    adaptation = np.linalg.inv(_BRADFORD) @ cones @ _BRADFORD  # the picture's white -> D50
    colorants = adaptation @ to_xyz
    function, parameters = _NCLX_TRANSFERS[transfer]
    curve = b"para\0\0\0\0" + struct.pack(">HH", function, 0) + _s15(parameters)
    tags = [(b"desc", _mluc(f"H.273 primaries {primaries}, transfer {transfer}")),
            (b"cprt", _mluc("No copyright, use freely")),
            (b"wtpt", b"XYZ \0\0\0\0" + _s15(_D50)),
            (b"chad", b"sf32\0\0\0\0" + _s15(adaptation.ravel())),
            (b"rXYZ", b"XYZ \0\0\0\0" + _s15(colorants[:, 0])),
            (b"gXYZ", b"XYZ \0\0\0\0" + _s15(colorants[:, 1])),
            (b"bXYZ", b"XYZ \0\0\0\0" + _s15(colorants[:, 2])),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    table_end = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", table_end + len(data), len(body))
        data += body
    size = table_end + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + b"\x04\x30\0\0" + b"mntr" + b"RGB "
              + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 24 + b"\0" * 4 + _s15(_D50))
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


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


#: JPEG markers on which Pillow reads the frame header (SOF0-15 but DHT, JPG and DAC, and
#: DHP): it joins the ICC chunks seen so far there, and takes none after.
_JPEG_FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB,
                                 0xCD, 0xCE, 0xCF, 0xDE})


def jpeg_profile(data: bytes) -> bytes | None:
    """The ICC profile of a JPEG's header (its ``APP2`` chunks joined), or None.

    The profile Pillow reads, so that a JPEG decoded without Pillow (tiles)
    is converted as one decoded by it (targets, originals): the chunks before
    the frame header (the first ``SOF`` marker), sorted as Pillow sorts them
    (by sequence number) and joined; None when there are none, when the
    first chunk's count of chunks is not how many there are (Pillow drops
    such a profile), or when no frame header comes before the first scan.
    A JPEG without a profile costs a few byte comparisons.
    """
    chunks: list[bytes] = []
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
        if marker in _JPEG_FRAME_MARKERS:
            if not chunks:
                return None
            chunks.sort()  # Pillow sorts whole chunks: by sequence number first
            if len(chunks[0]) < 14 or chunks[0][13] != len(chunks):
                return None
            return b"".join(chunk[14:] for chunk in chunks)
        if marker in (0xDA, 0xD9):
            break
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if length < 2:
            break
        payload = data[position + 4:position + 2 + length]
        if marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00"):
            chunks.append(payload)
        position += 2 + length
    return None


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
