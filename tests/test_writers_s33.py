"""Output writers under hostile conditions (session 33): encoder refusals said in one line."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image, WebPImagePlugin

from mosaicist.cli import main
from mosaicist.errors import MosaicistError
from mosaicist.render import write_image


def refusing_encoder(code: int):
    """A stand-in for Pillow's WebP encoder that fails as libwebp does with ``code``."""

    def encode(*arguments, **keywords):
        raise ValueError(f"encoding error {code}")

    return encode


@pytest.mark.parametrize("code, words", [
    (6, "block headers are over the 512 KB"),
    (7, "over the 16 MB a partition"),
])
def test_a_picture_libwebp_cannot_hold_is_one_line_naming_the_output(tmp_path, monkeypatch,
                                                                      code, words):
    # A 16,383 x 9,675 px mosaic of 129 px tiles (under the 160-megapixel limit) made
    # libwebp fail with error 6 after minutes of drawing: Pillow's bare ValueError was a
    # traceback. It is now a one-line refusal naming the file and formats that can.
    monkeypatch.setattr(WebPImagePlugin._webp, "WebPEncode", refusing_encoder(code))
    output = tmp_path / "mural.webp"
    with pytest.raises(MosaicistError) as error:
        write_image(output, [np.zeros((4, 6, 3), np.uint8)], 6, 4)
    message = str(error.value)
    assert message.startswith(f"{output}: the WebP encoder (libwebp) cannot hold this 6x4 px")
    assert words in message and f"(error {code})" in message
    assert "use .jpg, .png, .tif or .dzi" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no file, no temporary


def test_libwebp_out_of_memory_is_a_memory_error(tmp_path, monkeypatch):
    monkeypatch.setattr(WebPImagePlugin._webp, "WebPEncode", refusing_encoder(1))
    with pytest.raises(MemoryError):
        write_image(tmp_path / "a.webp", [np.zeros((4, 6, 3), np.uint8)], 6, 4)
    assert list(tmp_path.iterdir()) == []


def test_a_make_whose_webp_libwebp_refuses_ends_in_one_line(tmp_path, monkeypatch):
    tiles = make_colour_folder(tmp_path / "tiles", 4)
    target = tmp_path / "target.png"
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(target)
    monkeypatch.setattr(WebPImagePlugin._webp, "WebPEncode", refusing_encoder(6))
    output = tmp_path / "out.webp"
    result = CliRunner().invoke(main, ["make", str(target), "--tiles", str(tiles), "--cell",
                                       "4", "--tile-px", "4", "-o", str(output), "-q"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        f"mosaicist: error: {output}: the WebP encoder (libwebp) cannot hold this 8x8 px "
        "picture: its block headers are over the 512 KB the format gives them (a detailed "
        "picture of about 150 megapixels or more) (error 6); use .jpg, .png, .tif or .dzi, "
        "or fewer pixels"]
    assert not output.exists()
