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


# --- The documented example, as written ------------------------------------------------------

def _doc_blocks() -> list[str]:
    """The Python blocks of docs/architecture.md's plugin section, in order."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    section = text.split("### A plugin, from outside the package", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_architecture_example_runs_as_written(setup, tmp_path):
    import subprocess
    import sys

    plugin, script = _doc_blocks()
    assert plugin.startswith("# my_plugin.py") and script.startswith("# my_mosaicist.py")
    (tmp_path / "my_plugin.py").write_text(plugin)
    (tmp_path / "my_mosaicist.py").write_text(script)
    target, tiles = setup

    def mosaicist_command(*arguments):
        return subprocess.run([sys.executable, "my_mosaicist.py", *arguments], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    shown = mosaicist_command("make", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "--search [exact|approximate|first]" in shown.stdout
    made = mosaicist_command(
        "make", str(target), "--tiles", str(tiles), "--cell", "8", "--tile-px", "8",
        "--search", "first", "-o", "mosaic.pgm", "--report", "r.json",
        "--cache-dir", str(tmp_path / "cache"))
    assert made.returncode == 0, made.stderr
    assert ("--search first on --device cpu runs without the preset's --max-uses, "
            "--min-spacing, --tint, --contrast") in made.stderr
    assert (tmp_path / "mosaic.pgm").read_bytes().startswith(b"P5 40 24 255\n")
    report = (tmp_path / "r.json").read_text()
    assert '"matcher": "first-tile"' in report and '"search": "first"' in report


# --- Registration -----------------------------------------------------------------------------

def _matcher_class(name, search=None, **members):
    """A Matcher subclass defined here, outside the package, as a plugin's is."""
    import re

    members.setdefault("match", LastTileMatcher.match)
    return type("Toy_" + re.sub(r"\W", "_", str(name)), (Matcher,),
                {"name": name, "search": search or name, "__module__": __name__, **members})


@pytest.fixture
def registered():
    """Register plugin matchers for one test; unregister them after."""
    names = []

    def register(name, search=None, **members):
        matcher = mosaicist.register_matcher(_matcher_class(name, search, **members)())
        names.append(matcher.name)
        return matcher

    yield register
    for name in names:
        MATCHERS.unregister(name)


@pytest.mark.parametrize(("name", "error"), [
    ("", ValueError), ("two words", ValueError), ("Upper", ValueError), ("a\nb", ValueError),
    (None, TypeError), (5, TypeError),
])
def test_registration_refuses_a_name_that_is_not_one_lower_case_word(name, error):
    with pytest.raises(error, match="the name of matcher .* must be"):
        mosaicist.register_matcher(_matcher_class(name, search="x")())
    odd_search = _matcher_class("fine", search="Two Words")()
    with pytest.raises(ValueError, match="the search of matcher"):
        mosaicist.register_matcher(odd_search)
    assert "fine" not in MATCHERS and name not in MATCHERS


def test_registration_refuses_what_would_misbehave_later(plugins):
    with pytest.raises(TypeError, match=r"not its class: use LastTileMatcher\(\)"):
        mosaicist.register_matcher(LastTileMatcher)
    # A text is a tuple of its letters: "cpu" would offer devices c, p and u.
    with pytest.raises(TypeError, match="devices of matcher .* must be a tuple"):
        mosaicist.register_matcher(_matcher_class("texts", devices="cpu")())
    with pytest.raises(TypeError, match="repetition_limits"):
        mosaicist.register_matcher(_matcher_class("yes", repetition_limits="yes")())
    # Answering exact on the CPU, as the built-in does before it: never chosen.
    with pytest.raises(ValueError, match="'shadow' .* would never be chosen: exact answer"):
        mosaicist.register_matcher(_matcher_class("shadow", search="exact")())
    with pytest.raises(ValueError, match="would never be chosen: last-tile"):
        mosaicist.register_matcher(_matcher_class("later", search="last")())
    with pytest.raises(ValueError, match="output format .* must be one word"):
        mosaicist.register_format(type("Spaced", (PortablePixmap,), {"suffixes": (".p m",)})())
    assert list(MATCHERS) == ["exact", "approximate", "gpu", "assignment", "last-tile"]
    assert ".p m" not in OUTPUT_FORMATS


def test_a_matcher_on_a_device_of_its_own_is_reachable(registered):
    # Exact on a new device is not in the built-ins' way, nor they in its.
    registered("tpu-exact", search="exact", devices=("cpu", "tpu"))
    options = MosaicOptions(search="exact", device="tpu", preset="seed")
    assert matcher_for(options).name == "tpu-exact"
    assert matcher_for(options.replace(device="cpu")).name == "exact"


def test_replacing_a_matcher_keeps_its_place_and_unregister_names_the_missing(registered):
    original = MATCHERS["approximate"]
    try:
        mosaicist.register_matcher(_matcher_class("approximate", search="approximate")(),
                                   replace=True)
        assert list(MATCHERS).index("approximate") == 1
    finally:
        MATCHERS.register("approximate", original, replace=True)
    with pytest.raises(KeyError, match="no matcher 'nothing' is registered"):
        MATCHERS.unregister("nothing")


def test_a_plugin_registered_after_the_cli_is_listed_and_then_forgotten(setup, tmp_path):
    # mosaicist.cli was imported when this module was: the table is read as help is shown.
    runner = CliRunner()
    mosaicist.register_matcher(_matcher_class("later-tile", search="later", devices=("tpu",))())
    try:
        shown = runner.invoke(mosaicist.cli.main, ["make", "--help"]).output
        assert "[exact|approximate|later]" in shown and "[cpu|cuda|tpu]" in shown
    finally:
        MATCHERS.unregister("later-tile")
    target, tiles = setup
    refused = runner.invoke(mosaicist.cli.main, [
        "make", str(target), "--tiles", str(tiles), "--search", "later", "-o",
        str(tmp_path / "m.png"), "--cache-dir", str(tmp_path / "cache")])
    assert refused.exit_code == 1
    assert refused.stderr == ("mosaicist: error: unknown --search 'later'; use exact or "
                              "approximate\n")


# --- Plugins that fail ------------------------------------------------------------------------

def _raises(error):
    def match(self, request):
        raise error
    return match


def _make(setup, tmp_path, search, *extra):
    target, tiles = setup
    return CliRunner().invoke(mosaicist.cli.main, [
        "make", str(target), "--tiles", str(tiles), "--cell", "8", "--tile-px", "8",
        "--search", search, "-o", str(tmp_path / "m.png"), "--cache-dir",
        str(tmp_path / "cache"), "-q", *extra])


@pytest.mark.parametrize(("error", "shown"), [
    (TypeError("unsupported operand"), "failed in match(): TypeError: unsupported operand"),
    (ValueError(), "failed in match(): ValueError"),
    (ZeroDivisionError("division by zero"), "failed in match(): ZeroDivisionError: division"),
    (MemoryError(), "ran out of memory in match()"),
])
def test_a_failing_plugin_is_one_line_naming_it(registered, setup, tmp_path, error, shown):
    registered("broken", match=_raises(error))
    result = _make(setup, tmp_path, "broken")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"mosaicist: error: matcher 'broken' "
                                    f"({__name__}.Toy_broken) {shown}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "m.png").exists()


def test_an_interrupt_in_a_plugin_stays_an_interrupt(registered, setup, tmp_path):
    registered("stopped", match=_raises(KeyboardInterrupt()))
    result = _make(setup, tmp_path, "stopped")
    assert (result.exit_code, result.stderr) == (130, "mosaicist: error: interrupted\n")


def test_a_plugin_error_of_its_own_is_shown_as_it_is(registered, setup, tmp_path):
    registered("own", match=_raises(mosaicist.MosaicistError("the model file is missing")))
    result = _make(setup, tmp_path, "own")
    assert result.stderr == "mosaicist: error: the model file is missing\n"


def test_unsupported_and_check_runs_are_guarded_too(registered, setup, tmp_path):
    registered("says", unsupported=lambda self, options: "no tint here")
    result = _make(setup, tmp_path, "says")
    assert result.stderr == (
        f"mosaicist: error: matcher 'says' ({__name__}.Toy_says) is broken: unsupported() "
        "returned str 'no tint here', not an OptionError or None\n")
    registered("cannot", check_runs=lambda self, options: [][0])
    result = _make(setup, tmp_path, "cannot")
    assert result.stderr.startswith("mosaicist: error: matcher 'cannot' (")
    assert "failed in check_runs(): IndexError" in result.stderr
    registered("refuses", unsupported=lambda self, options: mosaicist.OptionError(
        "{tint} is not for this one"))
    result = _make(setup, tmp_path, "refuses", "--tint", "0.5")
    assert result.stderr == "mosaicist: error: --tint is not for this one\n"


def test_prepare_runs_once_before_the_match_and_is_guarded(registered, setup, tmp_path,
                                                            monkeypatch):
    # A matcher loads what it needs while the target decodes: once, before any match,
    # after the library opened; a failing one is one line like the others.
    from mosaicist import pipeline

    calls = []
    waited = pipeline._TargetReading.pixels
    monkeypatch.setattr(pipeline._TargetReading, "pixels",
                        lambda self: calls.append("pixels") or waited(self))
    registered("ready", prepare=lambda self, options: calls.append(("prepare", options.search)),
               match=lambda self, request: calls.append("match")
               or LastTileMatcher.match(self, request))
    result = _make(setup, tmp_path, "ready")
    assert result.exit_code == 0, result.stderr
    assert calls == [("prepare", "ready"), "pixels", "match"]
    registered("broken", prepare=lambda self, options: [][0])
    result = _make(setup, tmp_path, "broken")
    assert result.stderr.startswith("mosaicist: error: matcher 'broken' (")
    assert "failed in prepare(): IndexError" in result.stderr


def _returning(make):
    def match(self, request):
        return make(len(request.grid))
    return match


def _picks(tile, distance=None):
    return lambda cells: MatchResult(tile(cells), np.zeros(cells, np.int64)
                                     if distance is None else distance(cells))


# 15 cells; 7 tiles under the augment "flips" (2 transforms): candidates 0 to 13.
@pytest.mark.parametrize(("result", "problem"), [
    (lambda cells: (np.zeros(cells, np.int64), np.zeros(cells)),
     "match() returned tuple, not a MatchResult"),
    (_picks(lambda cells: np.zeros(cells - 1, np.int64)), "tile has shape (14,), not (15,)"),
    (_picks(lambda cells: np.zeros((cells, 1), np.int64)), "tile has shape (15, 1), not (15,)"),
    # Negative picks would wrap around to the last tiles: a wrong mosaic, silently.
    (_picks(lambda cells: np.full(cells, -1)), "tile holds -1, out of range: candidates are "
                                                "0 to 13 (7 tiles x 2 transforms)"),
    (_picks(lambda cells: np.full(cells, 14)), "tile holds 14, out of range"),
    (_picks(lambda cells: np.full(cells, 2.0)), "tile holds float64, not integers"),
    (_picks(lambda cells: np.zeros(cells, np.int64), lambda cells: np.full(cells, np.nan)),
     "distance holds NaN or infinity"),
    (_picks(lambda cells: np.zeros(cells, np.int64), lambda cells: ["far"] * cells),
     "distance holds <U3, not numbers"),
    (lambda cells: MatchResult(np.zeros(cells, np.int64), np.zeros(cells), gain=np.zeros(3)),
     "gain has shape (3,), not (15, 3)"),
    (lambda cells: MatchResult(np.zeros(cells, np.int64), np.zeros(cells),
                               tint=np.full(cells, 2.0)), "tint holds values outside 0 to 1"),
    (lambda cells: MatchResult(np.zeros(cells, np.int64), np.zeros(cells),
                               chroma=np.full(cells, -0.5)), "chroma holds values outside 0 to 1"),
    (lambda cells: MatchResult(np.zeros(cells, np.int64), np.zeros(cells),
                               chroma=np.ones(4)), "chroma has shape (4,), not (15,)"),
    (lambda cells: MatchResult(np.zeros(cells, np.int64), np.zeros(cells),
                               chroma_tint=np.full(cells, 1.5)),
     "chroma_tint holds values outside 0 to 1"),
    (lambda cells: MatchResult(np.zeros(cells, np.int64), np.zeros(cells), evaluated=-1),
     "evaluated is -1, not a count"),
])
def test_a_plugin_result_that_breaks_the_interface_is_refused(registered, setup, tmp_path,
                                                              result, problem):
    registered("wrong", match=_returning(result))
    target, tiles = setup
    with pytest.raises(mosaicist.MosaicistError) as caught:
        make_mosaic(target, tiles, cell_px=8, tile_px=8, search="wrong", augment="flips",
                    cache_dir=tmp_path / "cache")
    assert str(caught.value).startswith(
        f"matcher 'wrong' ({__name__}.Toy_wrong) is broken: "
        + (problem if problem.startswith("match()") else "its result's " + problem))


class _OutOfRangeMixin:
    """A match() from a class that is no Matcher: a base a plugin shares with other tools."""

    def match(self, request):
        return MatchResult(np.full(len(request.grid), 10**6), np.zeros(len(request.grid)))


class MixedInMatcher(_OutOfRangeMixin, Matcher):
    name = "mixed"
    search = "mixed"


def test_a_match_inherited_from_a_mixin_is_guarded(setup, tmp_path):
    # It was not in the class's own namespace, unguarded: an IndexError traceback.
    mosaicist.register_matcher(MixedInMatcher())
    try:
        result = _make(setup, tmp_path, "mixed")
    finally:
        MATCHERS.unregister("mixed")
    assert result.stderr == (
        f"mosaicist: error: matcher 'mixed' ({__name__}.MixedInMatcher) is broken: its "
        "result's tile holds 1000000, out of range: candidates are 0 to 6 (7 tiles x 1 "
        "transforms)\n")
    assert not (tmp_path / "m.png").exists()


def test_a_match_set_on_the_instance_is_guarded(setup, tmp_path):
    matcher = _matcher_class("instance")()
    matcher.match = _raises(ZeroDivisionError("division by zero")).__get__(matcher)
    mosaicist.register_matcher(matcher)
    try:
        result = _make(setup, tmp_path, "instance")
        # Registered again (replacing itself), it is not wrapped twice.
        mosaicist.register_matcher(matcher, replace=True)
        again = _make(setup, tmp_path, "instance")
    finally:
        MATCHERS.unregister("instance")
    shown = (f"mosaicist: error: matcher 'instance' ({__name__}.Toy_instance) failed in "
             "match(): ZeroDivisionError: division by zero\n")
    assert result.stderr == again.stderr == shown
    assert not (tmp_path / "m.png").exists()


def test_a_plugin_result_of_lists_is_taken_as_arrays(registered, setup, tmp_path):
    registered("lists", match=_returning(lambda cells: MatchResult([3] * cells, [0] * cells)))
    target, tiles = setup
    mosaic = make_mosaic(target, tiles, cell_px=8, tile_px=8, search="lists", augment="flips",
                         cache_dir=tmp_path / "cache")
    assert mosaic.placements.tile.tolist() == [1] * 15
    assert mosaic.placements.transform.tolist() == [1] * 15


# --- The package's surface --------------------------------------------------------------------

def test_the_top_level_lists_only_its_public_names_each_documented():
    import inspect

    public = [name for name in dir(mosaicist) if not name.startswith("_")]
    assert public == sorted(mosaicist.__all__)
    for name in mosaicist.__all__:
        value = getattr(mosaicist, name)
        doc = inspect.getdoc(value) or ""
        assert doc.strip(), name
        if inspect.isfunction(value) and len(inspect.signature(value).parameters) > 1:
            assert "Parameters\n----------" in doc, name


def test_importing_the_package_and_its_plugin_names_loads_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, mosaicist\n"
            "from mosaicist import (Matcher, MatchRequest, MatchResult, OutputFormat, Picture,\n"
            "                       register_format, register_matcher)\n"
            "heavy = ('torch', 'faiss', 'dask', 'distributed', 'fastapi', 'uvicorn', 'numba')\n"
            "print(sorted(name for name in heavy if name in sys.modules))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"


def _run_make(setup, tmp_path, output):
    target, tiles = setup
    return CliRunner().invoke(mosaicist.cli.main, [
        "make", str(target), "--tiles", str(tiles), "--cell", "8", "--tile-px", "8",
        "-o", str(output), "--cache-dir", str(tmp_path / "cache")])


@pytest.mark.parametrize(("method", "body", "shown"), [
    ("write", "raise TypeError('bad bands')", "failed in write(): TypeError: bad bands"),
    ("check", "raise ZeroDivisionError()", "failed in check(): ZeroDivisionError"),
    ("reads", "return ['dpi']", "is broken: reads() returned ['dpi'], not a set"),
    ("least_room", "return (1.5, 1)", "is broken: least_room() returned (1.5, 1)"),
    ("companions", "return ('x.txt',)", "is broken: companions() returned ('x.txt',)"),
])
def test_a_failing_output_format_is_one_line_naming_it(setup, tmp_path, method, body, shown):
    # An output format's failures reached the user as tracebacks.
    namespace: dict = {}
    arguments = {"write": "self, path, picture, options, show_progress=False",
                 "check": "self, path, width, height, options",
                 "reads": "self, options", "least_room": "self, width, height, options",
                 "companions": "self, path"}[method]
    exec(f"def {method}({arguments}):\n    {body}\n", namespace)
    broken = type("Broken", (PortablePixmap,), {"__module__": "someone_elses",
                                                "suffixes": (".bpm",), "name": "BPM",
                                                method: namespace[method]})()
    mosaicist.register_format(broken)
    try:
        result = _run_make(setup, tmp_path, tmp_path / "out.bpm")
    finally:
        OUTPUT_FORMATS.unregister(".bpm")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "output format 'BPM' (someone_elses.Broken)" in lines[0], lines
    assert shown in lines[0], lines[0]
    assert not (tmp_path / "out.bpm").exists()


def test_an_output_format_that_writes_nothing_is_refused(setup, tmp_path):
    silent = type("Silent", (PortablePixmap,), {
        "__module__": "someone_elses", "suffixes": (".spm",), "name": "SPM",
        "write": lambda self, path, picture, options, show_progress=False: None})()
    mosaicist.register_format(silent)
    try:
        result = _run_make(setup, tmp_path, tmp_path / "out.spm")
    finally:
        OUTPUT_FORMATS.unregister(".spm")
    assert result.exit_code == 1, result.output
    assert "out.spm: the SPM writer made no file" in result.stderr


@pytest.mark.parametrize("suffixes", [(), ".ppm", (".tar.gz",), (".",), (".P",)])
def test_register_format_refuses_suffixes_that_can_never_be_chosen(suffixes):
    odd = type("Odd", (PortablePixmap,), {"suffixes": suffixes})()
    with pytest.raises(ValueError):
        mosaicist.register_format(odd)
    with pytest.raises(TypeError, match="not its class"):
        mosaicist.register_format(PortablePixmap)
