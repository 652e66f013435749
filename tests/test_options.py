"""The options type: declarations, validation that names the parameter, the codec, the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_colour_folder
from PIL import Image

from mosaicist import MosaicOptions, OptionError, Placements
from mosaicist.cli import main
from mosaicist.errors import MosaicistError, check_range
from mosaicist.options import (
    DEFAULT_PRESET,
    SETTINGS_VERSION,
    default_match_px,
    setting_named,
    settings,
)


def test_every_field_is_a_declared_setting_with_help():
    names = [field.name for field in dataclasses.fields(MosaicOptions)
             if not field.name.startswith("_")]
    assert names[0] == "preset"
    declared = settings()
    assert [setting.name for setting in declared] == names
    for setting in declared:
        assert setting.help.strip()
        assert setting.section in ("grid", "match", "picture", "output", "report")
        if setting.name not in ("match_px", "preset"):  # derived from tile_px; the bundle
            # The default preset may set some; the seed preset is exactly the defaults.
            assert getattr(MosaicOptions(preset="seed"), setting.name) == setting.default
    assert setting_named("cell_px").flag == "--cell"
    assert setting_named("max_uses").flag == "--max-uses"
    assert setting_named("jpeg_quality").flag == "--quality"
    assert setting_named("compute_metrics").flag is None
    # Help may name other settings, shown as flags on the command line.
    assert "--tile-px" in setting_named("match_px").describe(lambda name: setting_named(name).flag)
    assert "tile_px up to 64" in setting_named("match_px").describe()


@pytest.mark.parametrize(("changes", "message"), [
    ({"cell_px": 0}, "cell_px must be between 1 and 1024 pixels, got 0"),
    ({"tile_px": 1025}, "tile_px must be between 1 and 1024 pixels, got 1025"),
    ({"match_px": -3}, "match_px must be between 1 and 1024 pixels, got -3"),
    ({"limit": 0}, "limit must be at least 1, got 0"),
    ({"metric": "xyz"}, "unknown metric 'xyz'; use seed, lab or oklab"),
    ({"augment": "some"}, "unknown augment 'some'; use none, flips, rotations or all"),
    ({"tint": 1.5}, "tint must be between 0 and 1, got 1.5"),
    ({"tint": float("nan")}, "tint must be between 0 and 1, got nan"),
    ({"overlay": -0.1}, "overlay must be between 0 and 1, got -0.1"),
    ({"max_uses": 0}, "max_uses must be at least 1, got 0"),
    ({"min_spacing": -1}, "min_spacing must be at least 0, got -1"),
    ({"assign": "best"}, "unknown assign 'best'; use optimal or greedy"),
    ({"jpeg_quality": 101}, "jpeg_quality must be between 1 and 100, got 101"),
    ({"dzi_tile_size": 0}, "dzi_tile_size must be between 16 and 2048 pixels, got 0"),
    ({"dzi_overlap": 200}, "dzi_overlap must be between 0 and 127 pixels (half of dzi_tile_size)"),
    ({"dzi_format": "gif"}, "unknown dzi_format 'gif'; use jpeg, png or webp"),
    ({"cell_px": 8.0}, "cell_px must be a whole number, got 8.0"),
    ({"cell_px": True}, "cell_px must be a whole number, got True"),
    ({"tint": "0.5"}, "tint must be a number, got '0.5'"),
    ({"metric": None}, "metric must be set, got None"),
    ({"compute_metrics": 1}, "compute_metrics must be true or false, got 1"),
])
def test_bad_values_name_the_parameter(changes, message):
    with pytest.raises(OptionError) as caught:
        MosaicOptions(**changes)
    assert str(caught.value).startswith(message)
    assert set(caught.value.parameters) <= {setting.name for setting in settings()}
    # Also a ValueError, as the scientific-Python libraries raise for bad arguments.
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, MosaicistError)


def test_values_are_normalised():
    options = MosaicOptions(tint=1, dzi_format="JPG")
    assert options.tint == 1.0 and isinstance(options.tint, float)
    assert options.dzi_format == "jpeg"
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.tint = 0.5  # type: ignore[misc]


def test_match_px_default_follows_tile_px_unless_given():
    assert MosaicOptions().match_px == 32
    assert MosaicOptions(tile_px=48).match_px == 48
    assert MosaicOptions(tile_px=256).match_px == default_match_px(256) == 32
    assert MosaicOptions().replace(tile_px=16).match_px == 16
    assert MosaicOptions().replace(tile_px=16).replace(tile_px=128).match_px == 32
    given = MosaicOptions(match_px=24)
    assert given.replace(tile_px=512).match_px == 24
    assert given.replace(match_px=None).match_px == 32
    with pytest.raises(TypeError, match="unknown settings: colour"):
        MosaicOptions().replace(colour="red")
    # Also an OptionError (as a misspelt name in a mapping of settings is), with a hint.
    with pytest.raises(OptionError, match=r"unknown settings: cel_px \(did you mean cell_px\?\)"):
        MosaicOptions().replace(cel_px=8)
    # Any text is a name, braces too; sent from a worker process, it is still the same error.
    import pickle

    with pytest.raises(TypeError) as caught:
        MosaicOptions().replace(**{"a}": 1})
    back = pickle.loads(pickle.dumps(caught.value))
    assert str(back) == "unknown settings: a}" and isinstance(back, TypeError)
    with pytest.raises(OptionError, match="tint"):
        MosaicOptions().replace(tint=3)


def test_codec_round_trip_and_versions():
    options = MosaicOptions(cell_px=8, tile_px=96, metric="lab", augment="flips", tint=0.25,
                            max_uses=2, min_spacing=4, assign="greedy", jpeg_quality=80,
                            dzi_format="png", compute_metrics=False)
    data = options.to_json()
    assert data["version"] == SETTINGS_VERSION and data["match_px"] == 32
    assert data["preset"] == DEFAULT_PRESET == "balanced"
    assert json.loads(json.dumps(data)) == data
    again = MosaicOptions.from_json(json.loads(json.dumps(data)))
    assert again == options
    # Settings added since a file was written take their defaults (version 1 files
    # predate presets: the seed's).
    assert MosaicOptions.from_json({"version": 1, "tint": 0.5}) == MosaicOptions(
        preset="seed", tint=0.5)
    # Files hold every setting: one missing did not exist when it was written, so it
    # reads back as the seed's, whatever the preset.
    partial = MosaicOptions.from_json({"version": 2, "preset": "varied"})
    assert partial.preset == "varied" and (partial.tint, partial.max_uses) == (0.0, None)
    for bad, words in [
        ([], "settings must be an object"),
        ({"tint": 0.5}, "no version"),
        ({"version": "1"}, "version '1' is not valid"),
        ({"version": SETTINGS_VERSION + 1}, "newer than this mosaicist reads"),
        ({"version": 1, "colour": "red", "shape": 2}, "unknown settings: colour, shape"),
        ({"version": 1, "tint": 7}, "tint must be between 0 and 1"),
        ({"version": 1, "cell_px": [16]}, "cell_px must be a whole number"),
    ]:
        with pytest.raises(MosaicistError, match=words):
            MosaicOptions.from_json(bad)


def test_presets_set_what_is_not_given():
    from mosaicist.options import DEFAULT_PRESET, PRESETS

    assert DEFAULT_PRESET in PRESETS and "seed" in PRESETS
    assert PRESETS["seed"].settings == {}
    for preset in PRESETS.values():
        options = MosaicOptions(preset=preset.name)
        assert all(getattr(options, name) == value for name, value in preset.settings.items())
        assert preset.description
    varied = MosaicOptions(preset="varied")
    assert (varied.max_uses, varied.min_spacing, varied.tint) == (2, 5, 0.5)
    # Given settings win over the preset, and keep winning when the preset changes.
    mine = MosaicOptions(preset="varied", tint=0.1)
    assert (mine.tint, mine.max_uses) == (0.1, 2)
    back = mine.replace(preset="seed")
    assert (back.tint, back.max_uses, back.min_spacing) == (0.1, None, 1)
    assert MosaicOptions().replace(preset="varied") == varied
    with pytest.raises(OptionError, match="unknown preset 'loud'; use seed, balanced or varied"):
        MosaicOptions(preset="loud")


def test_option_error_templates_keep_values_literal():
    error = OptionError("{max_uses} {value} with {label}", value=3, label="{not a field}")
    assert str(error) == "max_uses 3 with {not a field}"
    assert error.parameters == ("max_uses",)
    assert error.message(lambda name: f"--{name}") == "--max_uses 3 with {not a field}"


def test_placements_json_keeps_the_options_and_reads_version_1(tmp_path):
    options = MosaicOptions(cell_px=8, tile_px=24, metric="oklab", tint=0.5, overlay=0.1)
    placements = Placements(2, 3, np.arange(6), np.arange(6, dtype=np.int64),
                            [f"t{i}.png" for i in range(6)], options=options,
                            source=str(tmp_path), target="/x/t.png", crop=(3, 1))
    placements.write(tmp_path / "p.json")
    document = json.loads((tmp_path / "p.json").read_text())
    assert document["version"] == 2
    assert document["settings"] == options.to_json()
    assert list(document["cells"]) == ["tile", "position", "distance", "transform", "tint"]
    again = Placements.read(tmp_path / "p.json")
    assert again.options == options
    assert (again.source, again.target, again.crop) == (str(tmp_path), "/x/t.png", (3, 1))
    # A file written by mosaicist before the settings were one object (version 1).
    old = {"format": "mosaicist-placements", "version": 1, "source": "cifar10", "cell_px": 8,
           "tile_px": 24, "match_px": 24, "metric": "lab", "augment": "flips", "tint": 0.3,
           "overlay": 0.0, "target": None, "crop": {"left": 0, "top": 2}, "rows": 1, "cols": 2,
           "cells": {"tile": ["a", "b"], "position": [0, 1], "distance": [5, 6],
                     "transform": ["identity", "mirror"], "tint": [[0, 0, 0], [1, 2, 3]]}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    read = Placements.read(tmp_path / "old.json")
    assert read.options == MosaicOptions(preset="seed", cell_px=8, tile_px=24, match_px=24,
                                         metric="lab", augment="flips", tint=0.3)
    assert (read.source, read.target, read.crop) == ("cifar10", None, (0, 2))
    assert read.transform.tolist() == [0, 1]
    for version in (0, 4, "2"):  # 3: placements with cell rectangles (adaptive cells)
        (tmp_path / "odd.json").write_text(json.dumps({**old, "version": version}))
        with pytest.raises(MosaicistError, match=r"odd\.json: .*version"):
            Placements.read(tmp_path / "odd.json")
    (tmp_path / "bad.json").write_text(json.dumps({**old, "tint": 9}))
    with pytest.raises(MosaicistError, match=r"bad\.json: not a valid placements file "
                                             r"\(tint must be between 0 and 1"):
        Placements.read(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def cli_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("options-cli")
    target = root / "target.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (32, 48, 3), np.uint8)).save(target)
    return root, target, make_colour_folder(root / "tiles", 12, size=8)


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-uses", "0"], "--max-uses must be at least 1, got 0"),
    (["--tint", "2"], "--tint must be between 0 and 1, got 2"),
    (["--metric", "xyz"], "unknown --metric 'xyz'; use seed, lab or oklab"),
    (["--quality", "0"], "--quality must be between 1 and 100, got 0"),
    (["--dzi-overlap", "300"],
     "--dzi-overlap must be between 0 and 127 pixels (half of --dzi-tile-size)"),
    (["--search", "nearest"], "unknown --search 'nearest'; use exact or approximate"),
    (["--device", "tpu"], "unknown --device 'tpu'; use cpu or cuda"),
    (["--search", "approximate", "--device", "cuda"],
     "--search approximate does not run on --device cuda; use cpu"),
    (["--search", "approximate", "--tint", "0.5"],
     "--search approximate does not combine with --tint"),
    (["--search", "approximate", "--max-uses", "2"],
     "--search approximate on --device cpu does not combine with repetition limits "
     "(--max-uses, --min-uses, --min-spacing)"),
    (["--device", "cuda", "--tint", "0.5"],
     "--device cuda runs the exact nearest-tile search only"),
    (["--max-uses", "1", "--limit", "3"],
     "96 cells with at most 1 use per tile (--max-uses 1) need at least 96 tiles, but the "
     "library has 3; add tiles or relax it"),
])
def test_cli_errors_name_the_flag(cli_setup, tmp_path, monkeypatch, flags, message):
    from mosaicist.match._gpu import GpuMatcher

    # A machine whose card runs: without one, that is said first (tests/test_gpu2_s37.py).
    monkeypatch.setattr(GpuMatcher, "check_runs", lambda self, options: None)
    root, target, tiles = cli_setup
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--cell", "4", "--tile-px", "8",
        "-o", str(tmp_path / "m.png"), "--cache-dir", str(root / "cache"), *flags,
    ])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith(f"mosaicist: error: {message}"), lines[0]
    assert "_" not in lines[0].split(":")[2].split("'")[0].replace("--", ""), lines[0]
    assert list(tmp_path.iterdir()) == []


def test_cli_help_shows_every_setting_with_its_default():
    result = CliRunner().invoke(main, ["make", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for setting in settings():
        if setting.flag is not None:
            assert setting.flag in text, setting.flag
    assert "--cell PX Target pixels per cell side. [default: 16]" in text
    assert "--max-uses K Use no tile more than K times" in text
    assert "--search [exact|approximate]" in text
    assert "--preset [seed|balanced|varied] A bundle of settings: seed: the seed's method" \
        in text
    assert "[default: balanced]" in text
    assert "--metric [seed|lab|oklab]" in text
    assert "[default: --tile-px up to 64, else 32]" in text


def test_report_and_placements_carry_the_same_settings(cli_setup, tmp_path):
    root, target, tiles = cli_setup
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--cell", "4", "--tile-px", "8",
        "--tint", "0.3", "--max-uses", "9", "--quality", "77", "-o", str(tmp_path / "m.jpg"),
        "--placements", str(tmp_path / "p.json"), "--report", str(tmp_path / "r.json"),
        "--cache-dir", str(root / "cache"), "-q",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    placements = json.loads((tmp_path / "p.json").read_text())
    assert report["settings"] == placements["settings"]
    options = MosaicOptions.from_json(report["settings"])
    # The default preset's spacing (5) fitted to 12 tiles 9 times on a 6 x 16 grid;
    # the given tint turns its adaptive range off (tint_max follows tint).
    assert options == MosaicOptions(cell_px=4, tile_px=8, tint=0.3, max_uses=9,
                                    jpeg_quality=77, min_spacing=options.min_spacing)
    assert 1 < options.min_spacing < 5 and options.tint_max is None
    assert options.contrast == 0.5
    assert report["settings"]["preset"] == "balanced"
    assert report["matcher"] == "assignment"


def test_docstring_examples():
    import doctest

    import mosaicist.errors
    import mosaicist.options

    for module in (mosaicist.options, mosaicist.errors):
        failures, tried = doctest.testmod(module)
        assert tried > 0 and failures == 0, module.__name__


def test_the_package_names_are_lazy_but_complete():
    import subprocess
    import sys

    import mosaicist

    for name in mosaicist.__all__:
        assert getattr(mosaicist, name) is not None
    with pytest.raises(AttributeError):
        mosaicist.no_such_name  # noqa: B018
    # The index command does not import the matchers, renderers or SciPy.
    code = ("import sys, mosaicist.cli, mosaicist.library; "
            "print(sorted(m for m in ('scipy', 'mosaicist.match', 'mosaicist.render') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"


def test_a_preset_on_the_command_line_equals_its_flags(cli_setup, tmp_path):
    root, target, tiles = cli_setup
    base = ["make", str(target), "--tiles", str(tiles), "--cell", "4", "--tile-px", "8",
            "--cache-dir", str(root / "cache"), "-q", "--limit", "12"]

    def placements(name, *flags):
        result = CliRunner().invoke(main, [*base, *flags, "-o", str(tmp_path / f"{name}.png"),
                                           "--placements", str(tmp_path / f"{name}.csv")])
        assert result.exit_code == 0, result.output
        return (tmp_path / f"{name}.csv").read_text()

    # 96 cells from 12 tiles: 8 uses each at most under the explicit cap.
    assert placements("preset", "--preset", "varied", "--max-uses", "8", "--min-spacing", "2") \
        == placements("flags", "--preset", "seed", "--max-uses", "8", "--min-spacing", "2",
                      "--tint", "0.5")
    assert placements("balanced", "--max-uses", "8", "--min-spacing", "2") \
        == placements("balanced-flags", "--preset", "seed", "--max-uses", "8",
                      "--min-spacing", "2", "--tint", "1", "--contrast", "0.5", "--chroma", "1")
    assert placements("none") == placements("named", "--preset", "balanced")


def test_use_all_on_the_command_line(cli_setup, tmp_path):
    root, target, tiles = cli_setup
    base = ["make", str(target), "--tiles", str(tiles), "--cell", "8", "--tile-px", "8",
            "--cache-dir", str(root / "cache"), "-o", str(tmp_path / "m.png"), "-q"]
    result = CliRunner().invoke(main, [*base, "--use-all", "--placements",
                                       str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    used = {line.split(",")[2] for line in (tmp_path / "p.csv").read_text().splitlines()[1:]}
    assert len(used) == 12  # 24 cells, 12 tiles: every one
    result = CliRunner().invoke(main, [*base, "--use-all", "--min-uses", "3"])
    assert result.exit_code == 1
    assert "--min-uses 3 needs 36 cells for the 12 tiles, but the grid has 24" in result.stderr
    assert "(--limit) or smaller cells (--cell)" in result.stderr
    result = CliRunner().invoke(main, [*base, "--min-uses", "3", "--max-uses", "2"])
    assert "--min-uses 3 is above --max-uses 2; lower --min-uses or raise --max-uses" in \
        result.stderr


def test_the_default_presets_wishes_give_way_to_a_matcher_asked_for(cli_setup, tmp_path):
    from mosaicist.match import fitted_matcher

    # Approximate search honours neither caps nor tints: the preset's give way...
    matcher, fitted, dropped = fitted_matcher(MosaicOptions(search="approximate"))
    assert matcher.search == "approximate"
    assert set(dropped) == {"max_uses", "min_spacing", "tint", "contrast", "chroma"}
    assert (fitted.max_uses, fitted.min_spacing, fitted.tint, fitted.contrast,
            fitted.chroma) == (None, 1, 0, 0, 0)
    assert not fitted.given("tint")
    # ...given ones do not, and the error names them.
    with pytest.raises(OptionError, match="contrast"):
        fitted_matcher(MosaicOptions(search="approximate", contrast=0.5))
    # The exact search takes the preset as it is.
    options = MosaicOptions()
    assert fitted_matcher(options)[1:] == (options, ())
    root, target, tiles = cli_setup
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--cell", "4", "--tile-px", "8",
        "--search", "approximate", "-o", str(tmp_path / "m.png"),
        "--cache-dir", str(root / "cache")])
    assert result.exit_code == 0, result.output
    assert ("--search approximate on --device cpu runs without the preset's --max-uses"
            in result.stderr)


def test_numpy_scalars_are_taken_as_the_python_values_they_hold():
    # What indexing an array or a data frame gives (np.int64(16)) was refused as
    # "must be a whole number, got np.int64(16)".
    options = MosaicOptions(cell_px=np.int64(16), tile_px=np.uint16(48), max_uses=np.int32(2),
                            tint=np.float32(0.5), detail=np.int64(10),
                            compute_metrics=np.bool_(False), metric=np.str_("lab"))
    assert (options.cell_px, options.tile_px, options.max_uses) == (16, 48, 2)
    assert (options.tint, options.detail, options.compute_metrics) == (0.5, 10.0, False)
    assert [type(value) for value in (options.cell_px, options.tile_px, options.max_uses,
                                      options.tint, options.detail, options.compute_metrics,
                                      options.metric)] == [int, int, int, float, float, bool, str]
    assert json.loads(json.dumps(options.to_json()))["cell_px"] == 16
    assert options.replace(cell_px=np.int8(8)).cell_px == 8
    # NumPy's bools are no numbers, and its floats no whole numbers, as Python's are not.
    for changes, message in [({"cell_px": np.bool_(True)}, "cell_px must be a whole number"),
                             ({"cell_px": np.float64(16.0)}, "cell_px must be a whole number"),
                             ({"tint": np.bool_(True)}, "tint must be a number"),
                             ({"compute_metrics": np.int64(1)},
                              "compute_metrics must be true or false"),
                             ({"tint": np.float64(2)}, "tint must be between 0 and 1, got 2.0")]:
        with pytest.raises(OptionError, match=message):
            MosaicOptions(**changes)


@pytest.mark.parametrize(("value", "message"), [
    ("32", "match_px must be a whole number, got '32'"),
    (None, "match_px must be a whole number, got None"),
    (True, "match_px must be a whole number, got True"),
    (32.0, "match_px must be a whole number, got 32.0"),
    (np.float64(32), "match_px must be a whole number"),
    (np.bool_(True), "match_px must be a whole number"),
    (0, "match_px must be between 1 and 1024 pixels, got 0"),
])
def test_check_range_checks_the_type_before_the_range(value, message):
    # A text or None reached the comparison (a raw TypeError); True and 32.0 passed.
    with pytest.raises(OptionError) as caught:
        check_range("match_px", value, 1, 1024, "pixels", whole=True)
    assert str(caught.value).startswith(message) and caught.value.parameters == ("match_px",)


def test_check_range_returns_plain_numbers():
    assert check_range("match_px", np.int64(16), 1, 1024, whole=True) == 16
    assert type(check_range("match_px", np.int64(16), 1, 1024, whole=True)) is int
    assert type(check_range("fps", np.float32(0.5), 0.01, 1000)) is float
    assert check_range("fps", 2, 0.01, 1000) == 2
    for value in ("0.5", None, True, [1]):
        with pytest.raises(OptionError, match="fps must be a number"):
            check_range("fps", value, 0.01, 1000)


def test_check_range_says_one_in_the_singular():
    # "--max-target-pixels must be at least 1 pixels".
    with pytest.raises(OptionError, match="must be at least 1 pixel, got 0$"):
        check_range("max_target_pixels", 0, 1, None, "pixels", whole=True)
    with pytest.raises(OptionError, match="must be at least 2 pixels, got 0$"):
        check_range("max_target_pixels", 0, 2, None, "pixels", whole=True)


def test_adaptive_cells_with_a_minimum_of_uses_are_refused_by_the_settings():
    # Refused only once the library was indexed and the cells split.
    from mosaicist.errors import OptionError

    with pytest.raises(OptionError) as refused:
        MosaicOptions(adaptive=1, min_uses=1)
    assert refused.value.message() == "adaptive does not combine with min_uses 1 yet"
    assert MosaicOptions(adaptive=1).min_uses == 0


@pytest.mark.parametrize(("flags", "named"), [
    (["--use-all"], "--use-all (--min-uses 1)"), (["--min-uses", "2"], "--min-uses 2"),
])
def test_adaptive_cells_name_the_minimum_as_given(tmp_path, flags, named):
    # "--adaptive does not combine with --min-uses yet" answered a --use-all.
    from click.testing import CliRunner

    from mosaicist.cli import main

    result = CliRunner().invoke(main, ["make", "t.png", "--tiles", "lib", "--adaptive", "1",
                                       "-o", str(tmp_path / "out.png"), *flags])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (f"mosaicist: error: --adaptive does not combine with "
                                     f"{named} yet")


def test_unknown_keywords_of_the_options_suggest_the_setting():
    # Python's own TypeError suggested nothing; replace() and make_mosaic() did.
    with pytest.raises(TypeError, match=r"max_use \(did you mean max_uses\?\)") as caught:
        MosaicOptions(max_use=1)
    assert isinstance(caught.value, OptionError)
    assert MosaicOptions(max_uses=3).max_uses == 3


HUGE = 10**400  # a whole number no setting can use; float() of it overflows
OVER_PRINTABLE = 10**5000  # Python refuses to print an int of over 4,300 digits


@pytest.mark.parametrize(("changes", "message"), [
    # A number setting given a huge int: an OverflowError from float() inside.
    ({"tint": HUGE}, "tint must be between 0 and 1, got a number of 401 digits"),
    ({"detail": -HUGE}, "detail must be between 0 and 255, got a negative number of 401 digits"),
    ({"overlay": OVER_PRINTABLE}, "overlay must be between 0 and 1, got a number of 5001 digits"),
    # A whole-number setting: the message printed all 401 digits, or failed to print them.
    ({"cell_px": OVER_PRINTABLE},
     "cell_px must be between 1 and 1024 pixels, got a number of 5001 digits"),
    ({"cells": HUGE}, "cells must be at least 1 and at most 9,223,372,036,854,775,807, got a "
     "number of 401 digits"),
    # Accepted before, and min_spacing=10**400 divided by zero in the assignment's checks.
    ({"min_spacing": HUGE}, "min_spacing must be at least 0 and at most "
                            "9,223,372,036,854,775,807, got a number of 401 digits"),
    ({"max_uses": 2**63}, "max_uses must be at least 1 and at most 9,223,372,036,854,775,807, got "
                          "9223372036854775808"),
    ({"max_target_pixels": np.uint64(2**64 - 1)},
     "max_target_pixels must be at least 1 pixel and at most 9,223,372,036,854,775,807, got "
     "18446744073709551615"),
    # Of the wrong type, or unknown: shown short.
    ({"print_size": OVER_PRINTABLE},
     "print_size must be a text or None, got a number of 5001 digits"),
    ({"metric": "x" * 10_000}, "unknown metric 'xxxxxxxx"),
    ({"print_size": "x" * 10_000}, "print_size must be WIDTHxHEIGHT in cm"),
    ({"aspect": (10**5000, 1)}, "aspect must be a text, got a tuple"),
])
def test_huge_numbers_and_long_values_are_refused_in_one_short_line(changes, message):
    with pytest.raises(OptionError) as refused:
        MosaicOptions(**changes)
    text = str(refused.value)
    assert text.startswith(message), text
    assert refused.value.parameters == tuple(changes) and len(text) < 200, text


def test_the_largest_whole_numbers_are_still_taken():
    largest = 2**63 - 1
    options = MosaicOptions(cells=largest, max_uses=largest, min_spacing=largest,
                            limit=np.int64(largest), max_target_pixels=largest)
    assert (options.cells, options.max_uses, options.min_spacing, options.limit,
            options.max_target_pixels) == (largest,) * 5
    assert MosaicOptions.from_json(json.loads(json.dumps(options.to_json()))) == options


def test_a_huge_spacing_is_refused_by_name_before_any_work(cli_setup, tmp_path):
    # make_mosaic(min_spacing=10**400) raised ZeroDivisionError from the assignment's
    # feasibility check, after the library was indexed.
    from mosaicist import make_mosaic

    root, target, tiles = cli_setup
    with pytest.raises(OptionError, match=r"^min_spacing must be at least 0 and at most 9,223"):
        make_mosaic(target, tiles, cache_dir=root / "cache", min_spacing=HUGE)
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--cell", "4", "--tile-px", "8",
        "-o", str(tmp_path / "m.png"), "--cache-dir", str(root / "cache"),
        "--min-spacing", str(HUGE),
    ])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        "mosaicist: error: --min-spacing must be at least 0 and at most "
        "9,223,372,036,854,775,807, got a number of 401 digits"]
    assert list(tmp_path.iterdir()) == []


def test_shown_values_count_digits_exactly():
    from mosaicist.options import shown_value

    # Around powers of ten, where the logarithm's float is off by one.
    for digits in (31, 100, 400, 4301, 5000):
        assert shown_value(10 ** (digits - 1)) == f"a number of {digits} digits"
        assert shown_value(10**digits - 1) == f"a number of {digits} digits"
    assert shown_value(10**30 - 1) == "9" * 30
    assert shown_value(np.int64(-5)) == "-5" and shown_value(True) == "True"


def test_minus_zero_is_written_as_zero():
    # "--tint -0" was kept as -0.0 and written so into the report and the placements file.
    options = MosaicOptions(tint=-0.0, overlay=np.float32(-0.0), detail=-0.0, tint_max=-0.0)
    assert json.dumps([options.to_json()[name] for name in
                       ("tint", "overlay", "detail", "tint_max")]) == "[0.0, 0.0, 0.0, 0.0]"
    # NaN stays refused, by name.
    with pytest.raises(OptionError, match="^tint must be between 0 and 1, got nan$"):
        MosaicOptions(tint=float("nan"))


@pytest.mark.parametrize(("data", "message"), [
    # str() of the version raised ValueError (over 4,300 digits) or printed all 401.
    ({"version": 10**5000}, "settings of version a number of 5001 digits are newer than this "
                            "mosaicist reads"),
    ({"version": -(10**5000)}, "settings version a negative number of 5001 digits is not valid"),
    ({"version": 10**400}, "settings of version a number of 401 digits are newer"),
    # A name of a thousand characters was printed whole.
    ({"version": 5, "x" * 1000: 1, "abc": 2}, "unknown settings: abc, xxxxxxxx"),
])
def test_settings_files_with_hostile_versions_or_names_are_refused_in_one_short_line(
        data, message):
    with pytest.raises(MosaicistError) as refused:
        MosaicOptions.from_json(data)
    text = str(refused.value)
    assert text.startswith(message) and len(text) < 120, text


#: Hostile values for every setting: long texts (digits, letters, an aspect or print size
#: with one side of 100,000 digits or zeros), numbers of thousands of digits, long lists.
_HOSTILE_VALUES = {
    "digits": "1" * 200_000,
    "letters": "x" * 200_000,
    "long side": "1:" + "2" * 100_000,
    "leading zeros": "0" * 100_000 + "100:1",
    "spaced": "1:" + " 1" * 100_000,
    "huge": 10**5000,
    "huge negative": -(10**5000),
    "list": list(range(100_000)),
    "texts": ["x" * 1000] * 1000,
}


@pytest.mark.parametrize("value", list(_HOSTILE_VALUES.values()), ids=list(_HOSTILE_VALUES))
@pytest.mark.parametrize("name", [declared.name for declared in settings()
                                  # Checked against their registries when a mosaic is made.
                                  if declared.name not in ("search", "device")])
def test_every_setting_refuses_a_long_value_in_a_short_message(name, value):
    # MosaicOptions(aspect="1" * 200000) made a message of 200,067 characters (the
    # studio's answer and the command line's one line, whole).
    with pytest.raises(OptionError) as refused:
        MosaicOptions(**{name: value})
    flag = setting_named(name).flag or name
    for text in (str(refused.value), refused.value.message(lambda _: flag)):
        assert len(text) < 300 and text.count("\n") == 0, text[:300]
    assert name in str(refused.value) and name in refused.value.parameters
    assert flag in refused.value.message(lambda _: flag)


def test_settings_read_from_a_file_refuse_a_long_value_in_a_short_message():
    with pytest.raises(OptionError, match="^aspect must be two positive whole numbers") as refused:
        MosaicOptions.from_json({"version": SETTINGS_VERSION, "aspect": "1" * 200_000})
    assert len(str(refused.value)) < 300


@pytest.mark.parametrize("names", [
    ["a" * 200_000],
    [f"x{index}" for index in range(20_000)],
])
def test_unknown_names_are_listed_short(names):
    # Each name was listed whole, and every one of thousands.
    with pytest.raises(OptionError, match="^unknown settings: ") as refused:
        MosaicOptions(**dict.fromkeys(names, 1))
    assert len(str(refused.value)) < 300, str(refused.value)[:300]
    with pytest.raises(OptionError) as replaced:
        MosaicOptions().replace(**dict.fromkeys(names, 1))
    assert len(str(replaced.value)) < 300
    with pytest.raises(MosaicistError) as read:
        MosaicOptions.from_json({"version": SETTINGS_VERSION, **dict.fromkeys(names, 1)})
    assert len(str(read.value)) < 300
    # A short typo still gets its suggestion.
    with pytest.raises(OptionError, match=r"max_use \(did you mean max_uses\?\)"):
        MosaicOptions(max_use=1)


def test_a_short_refusal_keeps_its_short_values_and_class():
    from mosaicist.options import UnknownSettingError, short_refusal

    error = OptionError("{aspect} {value!r} is not {most:>3}", value="1:1", most="x")
    assert short_refusal(error) is error
    long = UnknownSettingError("{aspect} {value!r} and {other!r} {{not a field}}",
                               value="9" * 1000, other="kept")
    shortened = short_refusal(long)
    assert type(shortened) is UnknownSettingError and shortened.parameters == ("aspect",)
    assert str(shortened) == ("aspect '" + "9" * 56 + "... and 'kept' {not a field}")


@pytest.mark.parametrize(("given", "kept"), [(0.333, 0.33), (0.336, 0.34), (0.5, 0.5), (1, 1.0),
                                             (0.0, 0.0), (0.01, 0.01),
                                             # Half up, as written (was half to even, and
                                             # 0.145 * 100 is 14.4999...).
                                             (0.025, 0.03), (0.015, 0.02), (0.005, 0.01),
                                             (0.145, 0.15), (0.995, 1.0)])
def test_tints_are_kept_in_the_hundredths_the_match_ranks_them_in(given, kept):
    # 0.333 was ranked at 0.33 but recorded and drawn at 0.333.
    options = MosaicOptions(tint=given, tint_max=given)
    assert options.tint == kept and options.tint_max == kept
    assert MosaicOptions.from_json(options.to_json()).tint == kept


@pytest.mark.parametrize("name", ["tint", "tint_max"])
def test_a_tint_that_rounds_to_no_tint_is_refused(name):
    # 0.004 was ranked as no tint, drawn as one, and reported as 0.004.
    with pytest.raises(OptionError, match=f"{name} is applied in hundredths: 0.004 would be 0"):
        MosaicOptions(**{name: 0.004})


def test_settings_written_with_a_tint_below_a_hundredth_read_as_no_tint():
    # Files written before tints were kept in hundredths: 0.004 was matched as no tint,
    # and such a file (placements, a batch's record) was refused when read back.
    written = MosaicOptions(tint=0.5).to_json() | {"tint": 0.004, "tint_max": 0.003}
    read = MosaicOptions.from_json(written)
    assert read.tint == 0.0 and read.tint_max == 0.0


def test_shown_type_says_an_before_a_vowel():
    from mosaicist.errors import shown_type

    assert shown_type(object()) == "an object"
    assert shown_type(np.zeros(2)) == "an ndarray"
    assert shown_type({}) == "a dict"
    assert shown_type(5) == "5"


@pytest.mark.parametrize(("settings", "name", "height"), [
    ({"aspect": "1:16", "tile_px": 1024}, "tile_px", 16384),
    ({"aspect": "2:3", "cell_px": 700}, "cell_px", 1050),
    ({"aspect": "1:2", "tile_px": 500, "match_px": 600}, "match_px", 1200),
])
def test_heights_are_held_to_the_sides_range(settings, name, height):
    # The ranges capped only widths: 1:16 at tile_px 1024 made tiles 16,384 pixels tall.
    with pytest.raises(OptionError, match=rf"^{name} .* is {height} pixels tall, over the "
                                          "1024 a side may be"):
        MosaicOptions(**settings)
    assert MosaicOptions(aspect="1:16", tile_px=64).tile_px == 64


def test_an_optional_setting_of_the_wrong_kind_says_none_is_none():
    # max_uses="none" (as the help words it) was refused as "must be a whole number".
    with pytest.raises(OptionError, match="max_uses must be a whole number or None, got 'none'"):
        MosaicOptions(max_uses="none")
    with pytest.raises(OptionError, match="^tint must be a number, got 'x'"):
        MosaicOptions(tint="x")
