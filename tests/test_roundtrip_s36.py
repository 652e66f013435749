"""make -> placements -> render, checked as an oracle (session 36).

Seeded random combinations of settings (presets, metrics, transforms, tints,
contrast and chroma transfers, use limits, spacing, cell and tile sizes,
aspects, adaptive cells, print sizes, output formats) on tiny libraries and
targets made here: ``render`` of the saved JSON and CSV placements writes the
very bytes ``make`` wrote, as the Python API does; the settings recorded in
the placements file and the report are every setting, as made; a render that
overrides one setting changes only that; placements edited by hand render
the same or are refused in one line naming the file; hostile files are
refused without big allocations.
"""

from __future__ import annotations

import csv
import io
import json
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_profiles import _folder as _profiled_folder
from test_profiles import _target as _profiled_target

from mosaicist import make_mosaic
from mosaicist.cli import main
from mosaicist.errors import OptionError
from mosaicist.options import MosaicOptions, setting_named, setting_names
from mosaicist.placements import Placements
from mosaicist.render import placements_renderer


def _library(root: Path, count: int, seed: int) -> Path:
    """``count`` small photos of random sizes: colour ramps (so that transforms show)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        height, width = rng.integers(12, 30, 2).tolist()
        y, x = np.mgrid[0:height, 0:width]
        pixels = (rng.integers(30, 226, 3) + x[..., None] / width * rng.uniform(-70, 70, 3)
                  + y[..., None] / height * rng.uniform(-70, 70, 3)
                  + rng.normal(0, 8, (height, width, 3)))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"t{index:02d}.png")
    return root


def _target(path: Path, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = (np.stack([40 + x * 3, 50 + y * 4, 60 + (x + y) * 2], -1)
              + rng.normal(0, 20, (height, width, 3)))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def _combination(seed: int) -> tuple[dict, str]:
    """Settings drawn from ``seed`` (as ``make_mosaic`` takes them) and an output extension."""
    draw = random.Random(seed)
    square = draw.random() < 0.7
    settings: dict = {"aspect": "1:1" if square else draw.choice(["3:2", "2:3"]),
                      "cell_px": draw.choice([4, 6, 8]) if square else 6}

    def maybe(name: str, choices: list, chance: float = 0.4) -> None:
        if draw.random() < chance:
            settings[name] = draw.choice(choices)

    maybe("preset", ["seed", "balanced", "varied"], 0.7)
    maybe("tile_px", [4, 6, 8, 12] if square else [6, 12], 0.6)
    maybe("metric", ["seed", "lab", "oklab"], 0.5)
    maybe("augment", ["flips", "rotations", "all"] if square else ["flips"])
    maybe("tint", [0.0, 0.25, 0.5, 1.0])
    maybe("tint_max", [0.6, 1.0], 0.2)
    maybe("contrast", [0.0, 0.5, 1.0], 0.3)
    maybe("chroma", [0.0, 0.5, 1.0], 0.3)
    maybe("max_uses", [None, 3, 5], 0.3)
    maybe("min_spacing", [1, 2], 0.3)
    maybe("crop", ["centre", "subject"], 0.3)
    maybe("overlay", [0.25], 0.15)
    maybe("dpi", [72, 300], 0.2)
    maybe("jpeg_quality", [50, 80], 0.2)
    maybe("match_px", [4, 8], 0.15 if square else 0)
    maybe("assign", ["greedy"], 0.15)
    maybe("limit", [18], 0.15)
    if draw.random() < 0.12 and square:
        settings.update(adaptive=1, cell_px=8, tile_px=8, detail=draw.choice([0.0, 10.0]))
        settings.pop("match_px", None)
    elif draw.random() < 0.12:
        settings.pop("cell_px")
        settings["cells"] = draw.choice([12, 30])
    return settings, draw.choice([".png", ".png", ".jpg", ".webp", ".tif"])


def _flags(settings: dict) -> list[str]:
    """The command line that gives ``settings``, made from the settings' declarations."""
    flags = []
    for name, value in settings.items():
        flags += [setting_named(name).flag, "none" if value is None else str(value)]
    return flags


def _cli(*arguments: object) -> object:
    result = CliRunner().invoke(main, [str(argument) for argument in arguments])
    assert result.exit_code == 0, (arguments, result.output, result.exception)
    return result


#: Seeds whose combinations are made (each is a few tenths of a second of make and render).
SEEDS = [3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 16, 17, 19, 23, 24, 27, 31, 34, 38, 39]


@pytest.mark.parametrize("seed", SEEDS)
def test_render_of_saved_placements_writes_the_bytes_make_wrote(tmp_path, seed):
    settings, suffix = _combination(seed)
    draw = random.Random(seed + 1000)
    library = _library(tmp_path / "lib", draw.randint(20, 60), seed)
    target = _target(tmp_path / "target.png", draw.randint(30, 48), draw.randint(30, 48), seed)
    cache = tmp_path / "cache"
    common = ["--tiles", library, *_flags(settings), "-q", "--cache-dir", cache]
    made = tmp_path / f"made{suffix}"
    _cli("make", target, *common, "-o", made, "--placements", tmp_path / "p.json",
         "--report", tmp_path / "report.json")
    _cli("make", target, *common, "-o", tmp_path / f"again{suffix}",
         "--placements", tmp_path / "p.csv")
    expected = made.read_bytes()
    assert (tmp_path / f"again{suffix}").read_bytes() == expected

    # The settings recorded: every one, in the placements file and the report alike.
    document = json.loads((tmp_path / "p.json").read_text())
    recorded = document["settings"]
    assert set(recorded) == {"version", *setting_names()}
    assert json.loads((tmp_path / "report.json").read_text())["settings"] == recorded
    assert MosaicOptions.from_json(recorded).to_json() == recorded

    # render from the JSON file, and from the CSV one given what CSV does not record.
    _cli("render", tmp_path / "p.json", "-o", tmp_path / f"json{suffix}", "-q",
         "--cache-dir", cache)
    assert (tmp_path / f"json{suffix}").read_bytes() == expected
    if not recorded["overlay"]:  # a CSV file cannot name the target blended over
        given = {name: recorded[name] for name in ("tile_px", "aspect", "metric", "crop",
                                                    "dpi", "jpeg_quality")
                 if recorded[name] is not None}
        _cli("render", tmp_path / "p.csv", "--tiles", library, *_flags(given),
             "-o", tmp_path / f"csv{suffix}", "-q", "--cache-dir", cache)
        assert (tmp_path / f"csv{suffix}").read_bytes() == expected

    # The same through the Python API.
    mosaic = make_mosaic(target, library, cache_dir=cache, **settings)
    assert mosaic.options.to_json() == recorded
    made_here = mosaic.placements.to_json()
    for key in ("rows", "cols", "crop", "cells", "settings"):
        assert made_here[key] == document[key], key
    mosaic.write(tmp_path / f"api{suffix}")
    assert (tmp_path / f"api{suffix}").read_bytes() == expected
    read = Placements.read(tmp_path / "p.json")
    placements_renderer(read, cache_dir=cache).write(tmp_path / f"api-render{suffix}",
                                                     read.options)
    assert (tmp_path / f"api-render{suffix}").read_bytes() == expected
    # Made again with the settings as recorded, the mosaic is the same.
    remade = make_mosaic(target, library, MosaicOptions.from_json(recorded), cache_dir=cache)
    assert remade.placements.to_json()["cells"] == document["cells"]


#: Values of every setting, for combinations of the options object alone.
_VALUES = {
    "preset": ["seed", "balanced", "varied"], "cell_px": [1, 4, 16, 1024],
    "tile_px": [1, 8, 32, 100, 1024], "match_px": [None, 1, 16, 64],
    "aspect": ["1:1", "3:2", "2:3", "16:9"], "cells": [None, 1, 500],
    "print_size": [None, "20x30cm", "8x10in", "100x50mm"], "limit": [None, 1, 40000],
    "adaptive": [0, 1, 3], "detail": [0, 12, 0.5, 255], "crop": ["centre", "subject"],
    "dedupe": [None, 0, 6, 64], "identical_photos": ["keep", "drop"],
    "colour_profiles": ["convert", "ignore"],
    "max_target_pixels": [1, 1_500_000_000], "metric": ["seed", "lab", "oklab"],
    "augment": ["none", "flips", "rotations", "all"], "tint": [0, 0.01, 0.333, 0.5, 1],
    "tint_max": [None, 0.2, 1], "contrast": [0, 0.3, 1], "chroma": [0, 0.7, 1],
    "max_uses": [None, 1, 3], "min_uses": [0, 1, 2], "min_spacing": [0, 1, 5],
    "assign": ["optimal", "greedy"], "search": ["exact", "approximate"],
    "device": ["cpu", "cuda"], "overlay": [0, 0.25, 1], "dpi": [None, 72, 300],
    "jpeg_quality": [None, 1, 92, 100], "dzi_tile_size": [16, 254, 2048],
    "dzi_overlap": [0, 1, 8], "dzi_format": ["jpeg", "png", "webp", "jpg"],
    "compute_metrics": [True, False],
}
#: What a render may override, and a value to override it with.
_OVERRIDES = {"tile_px": 48, "jpeg_quality": 55, "dpi": 150, "dzi_format": "png",
              "dzi_tile_size": 512, "aspect": "1:1", "metric": "lab", "crop": "centre"}


def test_every_setting_is_recorded_and_read_back_and_an_override_changes_only_itself():
    assert set(_VALUES) == set(setting_names())  # a new setting joins the combinations
    made = 0
    for seed in range(1500):
        draw = random.Random(seed)
        given = {name: draw.choice(values) for name, values in _VALUES.items()
                 if draw.random() < 0.35}
        try:
            options = MosaicOptions(**given)
        except OptionError:
            continue
        made += 1
        document = json.loads(json.dumps(options.to_json()))
        assert set(document) == {"version", *setting_names()}
        back = MosaicOptions.from_json(document)
        assert back == options and back.to_json() == document, given
        name = draw.choice(sorted(_OVERRIDES))
        try:
            changed = back.replace(**{name: _OVERRIDES[name]})
        except OptionError:
            continue  # the override itself does not fit the others (a tall aspect)
        assert [other for other in setting_names()
                if getattr(changed, other) != getattr(back, other)] in ([], [name]), given
    assert made > 1000


@pytest.mark.parametrize(("base", "size", "suffix", "extra"), [
    (["--preset", "varied"], 24, ".tif", ["--quality", "40", "--dpi", "150"]),
    (["--metric", "lab", "--tint", "0.5", "--augment", "all"], 16, ".jpg", ["--quality", "40"]),
    (["--overlay", "0.3"], 20, ".webp", ["--dpi", "150"]),
])
def test_a_render_at_another_size_or_format_is_the_make_at_it(tmp_path, base, size, suffix,
                                                               extra):
    library = _library(tmp_path / "lib", 30, 3)
    target = _target(tmp_path / "t.png", 48, 40, 3)
    common = ["--tiles", library, "--cell", "8", "--match-px", "8", "-q", *base]
    _cli("make", target, *common, "--tile-px", "8", "-o", tmp_path / "small.png",
         "--placements", tmp_path / "small.json")
    _cli("make", target, *common, "--tile-px", size, *extra, "-o", tmp_path / f"large{suffix}",
         "--placements", tmp_path / "large.json")
    small, large = (json.loads((tmp_path / name).read_text())
                    for name in ("small.json", "large.json"))
    assert small["cells"] == large["cells"]
    assert {name for name in small["settings"]
            if small["settings"][name] != large["settings"][name]} == {
        "tile_px", *({"jpeg_quality"} if "--quality" in extra else ()),
        *({"dpi"} if "--dpi" in extra else ())}
    _cli("render", tmp_path / "small.json", "--tile-px", size, *extra,
         "-o", tmp_path / f"render{suffix}", "-q")
    assert (tmp_path / f"render{suffix}").read_bytes() == (tmp_path / f"large{suffix}").read_bytes()


# --- placements edited by hand ---------------------------------------------------------------

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One make of uniform cells and one of adaptive cells, each saved as JSON and CSV."""
    root = tmp_path_factory.mktemp("made")
    library = _library(root / "lib", 30, 7)
    target = _target(root / "target.png", 48, 40, 7)
    for name, flags in (("grid", []), ("leaves", ["--adaptive", "1", "--detail", "5"])):
        for suffix in (".json", ".csv"):
            _cli("make", target, "--tiles", library, "--cell", "8", "--tile-px", "8",
                 "--max-uses", "5", "--augment", "flips", *flags, "-q",
                 "-o", root / f"{name}.png", "--placements", root / f"{name}{suffix}")
    return root


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    return rows[0], rows[1:]


def _csv_text(header: list[str], body: list[list[str]], end: str = "\n") -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator=end).writerows([header, *body])
    return out.getvalue()


def _shuffled(header, body):
    body = body[:]
    random.Random(1).shuffle(body)
    return _csv_text(header, body)


def _columns_reordered(header, body):
    order = list(range(len(header)))
    random.Random(2).shuffle(order)
    return _csv_text([header[i] for i in order], [[row[i] for i in order] for row in body])


#: Edits of a CSV file that draw the same picture.
CSV_KEPT = {
    "rows shuffled": _shuffled,
    "columns reordered": _columns_reordered,
    "CRLF line ends": lambda header, body: _csv_text(header, body, "\r\n"),
    "a byte-order mark": lambda header, body: "\ufeff" + _csv_text(header, body),
    "blank lines at the end": lambda header, body: _csv_text(header, body) + "\n\n",
    "spaces around numbers": lambda header, body: _csv_text(
        header, [[f" {row[0]} ", f" {row[1]}", *row[2:4], f"{row[4]} ", *row[5:]]
                 for row in body]),
    "a column added": lambda header, body: _csv_text(
        [*header, "note"], [[*row, "mine"] for row in body]),
}


@pytest.mark.parametrize("grid", ["grid", "leaves"])
@pytest.mark.parametrize("edit", list(CSV_KEPT))
def test_csv_edited_by_hand_in_harmless_ways_draws_the_same(made, tmp_path, grid, edit):
    header, body = _rows(made / f"{grid}.csv")
    edited = tmp_path / "edited.csv"
    edited.write_text(CSV_KEPT[edit](header, body), newline="")
    _cli("render", edited, "--tiles", made / "lib", "--tile-px", "8", "--crop", "subject",
         "-o", tmp_path / "out.png", "-q")
    assert (tmp_path / "out.png").read_bytes() == (made / f"{grid}.png").read_bytes()


def _reindented(document):
    return json.dumps(document, indent=4).replace("\n", "\r\n") + "\r\n\r\n  "


def _leaves_shuffled(document):
    order = list(range(len(document["cells"]["tile"])))
    random.Random(3).shuffle(order)
    for name, values in document["cells"].items():
        document["cells"][name] = [values[i] for i in order]
    return json.dumps(document)


@pytest.mark.parametrize(("grid", "edit"), [
    ("grid", _reindented), ("leaves", _reindented),
    ("grid", lambda document: "\ufeff" + json.dumps(document)),
    ("leaves", _leaves_shuffled),
])
def test_json_edited_by_hand_in_harmless_ways_draws_the_same(made, tmp_path, grid, edit):
    edited = tmp_path / "edited.json"
    edited.write_text(edit(json.loads((made / f"{grid}.json").read_text())), newline="")
    _cli("render", edited, "-o", tmp_path / "out.png", "-q")
    assert (tmp_path / "out.png").read_bytes() == (made / f"{grid}.png").read_bytes()


def _cell(column: int, value: str):
    return lambda header, body: _csv_text(
        header, [row[:column] + [value] + row[column + 1:] if index == 0 else row
                 for index, row in enumerate(body)])


#: Edits of a CSV file that are refused, and words of the refusal.
CSV_REFUSED = {
    "a cell left out": (lambda header, body: _csv_text(header, body[:-1]),
                        "29 cells listed for a grid of 6x5 cells"),
    "a cell twice": (lambda header, body: _csv_text(header, [*body, body[3]]), "also on line"),
    "a cell far away": (lambda header, body: _csv_text(
        header, [*body[:-1], ["999999", "999999", *body[-1][2:]]]), "1,000,000x1,000,000"),
    "a NaN distance": (_cell(3, "nan"), "distance must be a finite number"),
    "a huge position": (_cell(4, "9" * 30), "position"),
    "a negative position": (_cell(4, "-1"), "position"),
    "a negative row": (_cell(0, "-1"), "row and col must be at least 0"),
    "a row of 1.0": (_cell(0, "1.0"), "row must be a whole number"),
    "a tile by index": (_cell(2, "3"), "is not a file of"),
    "a tile by absolute path": (_cell(2, "/etc/passwd"), "absolute path"),
    "a tile outside the library": (_cell(2, "../target.png"), "leaves the library"),
    "a transform misspelt": (_cell(5, "Mirror"), "transform"),
    "semicolons": (lambda header, body: _csv_text(header, body).replace(",", ";"),
                   "no row, col, tile, distance, position column"),
    "no rows": (lambda header, body: _csv_text(header, []), "no rows"),
}


@pytest.mark.parametrize("edit", list(CSV_REFUSED))
def test_csv_edited_by_hand_otherwise_is_refused_in_one_line(made, tmp_path, edit):
    change, words = CSV_REFUSED[edit]
    header, body = _rows(made / "grid.csv")
    edited = tmp_path / "edited.csv"
    edited.write_text(change(header, body), newline="")
    result = CliRunner().invoke(main, ["render", str(edited), "--tiles", str(made / "lib"),
                                       "-o", str(tmp_path / "out.png"), "-q"])
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and str(edited) in result.output, result.output
    assert words in result.output, result.output
    assert not (tmp_path / "out.png").exists()


def _set(path: str, value: object):
    def change(document):
        *parents, last = path.split(".")
        holder = document
        for part in parents:
            holder = holder[int(part)] if isinstance(holder, list) else holder[part]
        holder[int(last) if isinstance(holder, list) else last] = value
        return json.dumps(document)
    return change


#: Hostile JSON files: each refused quickly, in one line, without allocating its claims.
JSON_HOSTILE = {
    "a grid of 10^12 cells": (lambda document: json.dumps(
        {**document, "rows": 10**6, "cols": 10**6}), "more than 100,000,000"),
    "a grid of 10^12 cells, as digits": (
        lambda document: json.dumps(document).replace('"rows": 5', '"rows": ' + "9" * 4000),
        "more than 100,000,000"),
    "a NaN distance": (_set("cells.distance.0", float("nan")), "finite number"),
    "an infinite tint": (_set("cells.tint.0", [float("inf"), 0, 0]), "tint"),
    "a huge tint": (_set("cells.tint.0", [1e300, 0, 0]), "within"),
    "a negative position": (_set("cells.position.0", -1), "position"),
    "a huge position": (_set("cells.position.0", 10**40), "position"),
    "a tile by index": (_set("cells.tile.0", 3), "not a text"),
    "a cell missing": (lambda document: json.dumps(
        {**document, "cells": {name: values[:-1]
                                for name, values in document["cells"].items()}}),
        "29 entries for a grid of 6x5 cells"),
    "a huge tile size": (_set("settings.tile_px", 10**9), "tile_px"),
    "a key twice": (lambda document: json.dumps(document).replace(
        '"rows": 5', '"rows": 5, "rows": 5'), "twice"),
    "a crop far away with the overlay": (
        lambda document: _set("crop.left", 10**12)(json.loads(_set(
            "settings.overlay", 0.5)(document))),
        "crop (left 1,000,000,000,000, top 0) puts the grid of 6x5 cells, 48x40 px, outside"),
}


@pytest.mark.parametrize("case", list(JSON_HOSTILE))
def test_hostile_json_placements_are_refused_in_one_line_without_big_allocations(
        made, tmp_path, case):
    change, words = JSON_HOSTILE[case]
    hostile = tmp_path / "hostile.json"
    hostile.write_text(change(json.loads((made / "grid.json").read_text())))
    tracemalloc.start()
    try:
        result = CliRunner().invoke(main, ["render", str(hostile), "-o",
                                           str(tmp_path / "out.png"), "-q"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and str(hostile) in result.output, result.output
    assert words in result.output, result.output
    assert peak < 20 * 2**20
    assert not (tmp_path / "out.png").exists()


def test_leaves_of_a_hostile_csv_are_refused(made, tmp_path):
    header, body = _rows(made / "leaves.csv")
    x = header.index("x")
    for rect, words in ((["0", "0", "1e308", "1e308"], "must lie within"),
                        (body[1][x:x + 4], "overlap")):
        edited = tmp_path / "edited.csv"
        edited.write_text(_csv_text(header, [row[:x] + rect if index == 0 else row
                                             for index, row in enumerate(body)]))
        result = CliRunner().invoke(main, ["render", str(edited), "--tiles",
                                           str(made / "lib"), "-o", str(tmp_path / "o.png")])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert words in result.output and str(edited) in result.output, result.output


# --- found in session 36, to be fixed outside this test's files ------------------------------

def test_a_preset_spacing_fitted_away_runs_as_the_recorded_settings_do(tmp_path):
    # --max-uses none and a preset spacing the grid cannot keep: the spacing is fitted to 1,
    # so nothing limits repetition, and the file records that; yet the assignment matcher
    # chosen for the preset's spacing ran (its contrast gains unranked), and a make with
    # the recorded settings makes another, better mosaic.
    library = _library(tmp_path / "lib", 30, 7)
    target = _target(tmp_path / "target.png", 48, 40, 7)
    mosaic = make_mosaic(target, library, max_uses=None, cell_px=4, tile_px=8, limit=2)
    assert mosaic.options.min_spacing == 1 and not mosaic.options.repetition_limited
    remade = make_mosaic(target, library, MosaicOptions.from_json(mosaic.options.to_json()))
    assert mosaic.matcher == remade.matcher
    assert remade.placements.to_json()["cells"] == mosaic.placements.to_json()["cells"]


def test_a_csv_of_a_seed_make_of_profiled_photos_renders_as_made(tmp_path):
    library = _profiled_folder(tmp_path / "lib", profiled=3, plain=3)
    target = _profiled_target(tmp_path / "t.png", None)
    _cli("make", target, "--tiles", library, "--preset", "seed", "--cell", "8", "--tile-px",
         "8", "-o", tmp_path / "made.png", "--placements", tmp_path / "p.csv", "-q")
    _cli("render", tmp_path / "p.csv", "--tiles", library, "--metric", "seed", "--crop",
         "centre", "--colour-profiles", "ignore", "--tile-px", "8", "-o", tmp_path / "again.png",
         "-q")
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "made.png").read_bytes()
