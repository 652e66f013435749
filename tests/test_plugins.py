"""Backends from outside the package: a toy matcher and a toy output format, used by make."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

import mosaicist
import mosaicist.cli
from mosaicist import MosaicOptions, OutputFormat, make_mosaic
from mosaicist.match import MATCHERS, Matcher, MatchRequest, MatchResult, matcher_for
from mosaicist.paths import atomic_path
from mosaicist.render import OUTPUT_FORMATS, Picture


class LastTileMatcher(Matcher):
    """Gives every cell the last tile of the library: a matcher in a few lines."""

    name = "last-tile"
    search = "last"

    def match(self, request: MatchRequest) -> MatchResult:
        cells = len(request.grid)
        last = len(request.library) - 1
        return MatchResult(np.full(cells, last * request.variants), np.zeros(cells, np.int64))


class PortablePixmap(OutputFormat):
    """Binary PPM (P6), streamed band by band: an output format in a few lines."""

    name = "PPM"
    suffixes = (".ppm",)

    def write(self, path, picture: Picture, options: MosaicOptions,
              show_progress: bool = False) -> None:
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            handle.write(b"P6 %d %d 255\n" % (picture.width, picture.height))
            for band in picture.bands:
                handle.write(band.tobytes())


@pytest.fixture
def plugins():
    matcher = mosaicist.register_matcher(LastTileMatcher())
    output = mosaicist.register_format(PortablePixmap())
    yield matcher, output
    MATCHERS.unregister(matcher.name)
    OUTPUT_FORMATS.unregister(".ppm")


@pytest.fixture
def setup(tmp_path):
    target = tmp_path / "target.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (24, 40, 3), np.uint8)).save(target)
    return target, make_colour_folder(tmp_path / "tiles", 7, size=8)


def test_make_uses_a_registered_matcher_and_format(plugins, setup, tmp_path):
    target, tiles = setup
    output, placements = tmp_path / "m.ppm", tmp_path / "p.json"
    result = CliRunner().invoke(mosaicist.cli.main, [
        "make", str(target), "--tiles", str(tiles), "--cell", "8", "--tile-px", "8",
        "--search", "last", "-o", str(output), "--placements", str(placements),
        "--report", str(tmp_path / "r.json"), "--cache-dir", str(tmp_path / "cache"),
    ])
    assert result.exit_code == 0, result.output
    assert "5x3 cells" in result.stderr
    with Image.open(output) as picture:
        assert picture.format == "PPM" and picture.size == (40, 24)
        pixels = np.asarray(picture)
    last = np.asarray(Image.open(tiles / "t006.png").convert("RGB"))
    assert np.array_equal(pixels, np.tile(last, (3, 5, 1)))
    again = mosaicist.Placements.read(placements)
    assert again.source_ids == ["t006.png"] * 15
    assert again.options.search == "last"
    assert '"matcher": "last-tile"' in (tmp_path / "r.json").read_text()


def test_the_api_takes_them_too(plugins, setup, tmp_path):
    target, tiles = setup
    mosaic = make_mosaic(target, tiles, cell_px=8, tile_px=8, search="last", augment="flips",
                         cache_dir=tmp_path / "cache")
    assert mosaic.matcher == "last-tile"
    assert set(mosaic.placements.tile.tolist()) == {6}
    assert set(mosaic.placements.transform.tolist()) == {0}
    mosaic.write(tmp_path / "api.ppm")
    assert (tmp_path / "api.ppm").read_bytes().startswith(b"P6 40 24 255\n")


def test_registries_refuse_clashes_and_unknown_names(plugins):
    with pytest.raises(ValueError, match="already registered"):
        mosaicist.register_matcher(LastTileMatcher())
    with pytest.raises(ValueError, match="already registered"):
        mosaicist.register_format(PortablePixmap())
    with pytest.raises(mosaicist.OptionError, match="does not combine with repetition"):
        matcher_for(MosaicOptions(search="last", max_uses=3))
    with pytest.raises(ValueError, match="lower case"):
        mosaicist.register_format(type("Odd", (PortablePixmap,), {"suffixes": (".PPM",)})())
