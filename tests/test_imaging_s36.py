"""A JPEG's near-duplicate signature is of the photo alone (session 36).

JPEGs are decoded at a reduced DCT scale chosen for the tiles; the
signature, of the photo's centre square at 32 px, was computed from that
decode, so one photo signed a few bits apart in indexes of other tile sizes
or aspects, and ``--dedupe`` grouped otherwise with ``--tile-px 48`` than
with the default. Both decoders are covered: libjpeg-turbo through
simplejpeg (a plain JPEG) and Pillow (one with EXIF, which takes it).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mosaicist import imaging
from mosaicist.library import TileLibrary
from mosaicist.sources.folder import FolderSource

#: Tile sizes and aspects whose DCT scales differ from the signature's, finer and coarser.
TILE_FORMATS = [(32, (1, 1)), (16, (1, 1)), (48, (1, 1)), (64, (1, 1)), (32, (2, 3)),
                (48, (3, 2)), (200, (1, 1))]


def _photo(seed: int = 0, width: int = 400, height: int = 300) -> np.ndarray:
    """A smooth picture under strong noise: its reduced decodes differ in detail."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    picture = np.stack([x * 0.5 + 40 * np.sin(y / (17 + seed)), y * 0.7, 255 - x * 0.4],
                       axis=-1)
    return np.clip(picture + rng.normal(0, 25, picture.shape), 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray, orientation: int | None = None) -> bytes:
    data = io.BytesIO()
    if orientation is None:
        Image.fromarray(pixels).save(data, "JPEG", quality=30)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(pixels).save(data, "JPEG", quality=30, exif=exif)
    return data.getvalue()


@pytest.mark.parametrize("orientation", [None, 1, 6], ids=["simplejpeg", "pillow", "turned"])
@pytest.mark.parametrize("crop", ["centre", "subject"])
def test_a_jpeg_signs_alike_whatever_the_tiles_it_is_decoded_for(orientation, crop):
    data = _jpeg(_photo(), orientation)
    signatures = {(width_px, aspect): imaging.decode_tile(data, width_px, aspect, crop).signature
                  for width_px, aspect in TILE_FORMATS}
    assert len(set(signatures.values())) == 1, signatures


@pytest.mark.parametrize("orientation", [None, 1], ids=["simplejpeg", "pillow"])
def test_the_tile_is_still_cut_from_the_decode_for_its_size(orientation):
    # The signature's own decode leaves the tile alone: a tile of 200 px is cut from a
    # decode at half size, not from the signature's at an eighth (which would blur it).
    pixels = _photo()
    data = _jpeg(pixels, orientation)
    tile = imaging.decode_tile(data, 200).pixels
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, 50:350]
    sharp = np.asarray(Image.fromarray(full).resize((200, 200), Image.Resampling.LANCZOS))
    blurred = np.asarray(Image.fromarray(full).resize((38, 38), Image.Resampling.LANCZOS)
                         .resize((200, 200), Image.Resampling.LANCZOS))
    error = np.abs(tile.astype(int) - sharp).mean()
    assert error < np.abs(blurred.astype(int) - sharp).mean() * 0.75


def test_indexes_of_other_tile_sizes_give_jpegs_the_same_signatures(tmp_path):
    # What `mosaicist index photos --duplicates` groups by, at the default and other sizes.
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(3):
        (folder / f"p{seed}.jpg").write_bytes(_jpeg(_photo(seed, 200, 150)))
    signed = []
    for width_px, aspect in ((32, "1:1"), (48, "1:1"), (32, "2:3")):
        library = TileLibrary.open(FolderSource(folder, workers=1), width_px, aspect=aspect,
                                   cache_dir=tmp_path / "cache")
        by_name = dict(zip(library.source_ids, range(len(library)), strict=True))
        hashes, colours = library.signatures()
        signed.append({name: (int(hashes[at]), colours[at].tolist())
                       for name, at in by_name.items()})
    assert signed[0] == signed[1] == signed[2]


@pytest.mark.parametrize("orientation", [None, 1], ids=["simplejpeg", "pillow"])
def test_a_tile_decoded_without_its_signature_is_the_same_tile(orientation, monkeypatch):
    # Rendering wants the pixels only: no second decode for a signature it drops.
    data = _jpeg(_photo(), orientation)
    signed = imaging.decode_tile(data, 200)
    monkeypatch.setattr(imaging, "_signature_of", None)  # never called
    unsigned = imaging.decode_tile(data, 200, sign=False)
    assert unsigned.signature is None and unsigned.window == signed.window
    np.testing.assert_array_equal(unsigned.pixels, signed.pixels)
