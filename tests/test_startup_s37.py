"""Help and ``--version`` load neither NumPy nor Pillow; the light choices stay their modules'.

The command line's help took the settings' choices and limits from the modules
that use them (colour spaces, ICC profiles, crops, sizes, transforms, the
duplicate threshold, the matchers), each importing NumPy and Pillow: every
``--help`` paid about a fifth of a second for them. They are declared in
:mod:`mosaicist._choices`, which imports nothing. Each check of what a command
loaded runs a fresh interpreter and reads its ``sys.modules``; no timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mosaicist._choices as choices
from mosaicist.cli import main

#: Modules help must not wait for: the arrays, the pictures and the matchers.
HEAVY = ("numpy", "PIL", "mosaicist.match")

#: Runs the command as ``python -m mosaicist`` does, then writes the modules it loaded
#: (at exit: a command that succeeds ends the process itself, after atexit's functions).
_RUN_AND_LIST = """
import atexit, json, runpy, sys
written_to, *arguments = sys.argv[1:]
def record():
    with open(written_to, "w") as listing:
        json.dump(sorted(sys.modules), listing)
atexit.register(record)
sys.argv = ["mosaicist", *arguments]
runpy.run_module("mosaicist", run_name="__main__", alter_sys=True)
"""


def _modules_loaded_by(tmp_path: Path, *arguments: str) -> tuple[list[str], str]:
    """The modules a ``mosaicist ARGUMENTS`` run held at its end, and what it printed."""
    listing = tmp_path / "modules.json"
    run = subprocess.run([sys.executable, "-c", _RUN_AND_LIST, str(listing), *arguments],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(listing.read_text()), run.stdout


def _heavy_among(modules: list[str]) -> list[str]:
    return [name for name in modules
            if any(name == heavy or name.startswith(heavy + ".") for heavy in HEAVY)]


@pytest.mark.parametrize("arguments", [
    ["--help"], ["-h"], ["--version"],
    *([command, "--help"] for command in sorted(main.commands)),
], ids=" ".join)
def test_help_and_version_load_neither_numpy_nor_pillow(tmp_path, arguments):
    modules, shown = _modules_loaded_by(tmp_path, *arguments)
    assert shown.strip()  # the help or the version was written
    assert _heavy_among(modules) == []


def test_make_help_lists_the_built_in_searches_and_devices(tmp_path):
    # Read from the matchers' table, which imported them (NumPy, Numba) for help alone.
    modules, shown = _modules_loaded_by(tmp_path, "make", "--help")
    assert "--search [exact|approximate]" in shown and "--device [cpu|cuda]" in shown
    assert _heavy_among(modules) == []


def test_checking_settings_loads_neither_numpy_nor_pillow():
    code = ("import sys\nfrom mosaicist.options import MosaicOptions\n"
            "options = MosaicOptions(preset='balanced', metric='lab', crop='subject', "
            "colour_profiles='convert', augment='all', dedupe=3, max_target_pixels=10)\n"
            "assert MosaicOptions.from_json(options.to_json()) == options\n"
            "print(sorted(name for name in sys.modules if name.split('.')[0] in "
            "('numpy', 'PIL')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def _values_of_their_modules() -> dict[str, object]:
    """Each value of :mod:`mosaicist._choices` as the module that uses it holds it."""
    from mosaicist import _profiles, colour, crop, dedupe, imaging, sizing, transforms
    from mosaicist.library import _index

    return {
        "METRICS": colour.METRICS,
        "COLOUR_PROFILE_MODES": _profiles.COLOUR_PROFILE_MODES,
        "CROP_MODES": crop.CROP_MODES,
        "DEDUPE_THRESHOLD": dedupe.DEFAULT_THRESHOLD,
        "TARGET_MAX_PIXELS": imaging.TARGET_MAX_PIXELS,
        "DEFAULT_DPI": sizing.DEFAULT_DPI,
        "DPI_RANGE": sizing.DPI_RANGE,
        "AUGMENT_SETS": transforms.AUGMENT_SETS,
        "IDENTICAL_PHOTO_MODES": _index.IDENTICAL_PHOTO_MODES,
    }


def test_each_light_value_is_its_modules():
    theirs = _values_of_their_modules()
    light = {name: getattr(choices, name) for name in dir(choices)
             if name.isupper() and not name.startswith("BUILT_IN_")}
    # A value added to the light module is compared here too.
    assert sorted(light) == sorted(theirs)
    for name, value in light.items():
        assert theirs[name] == value, name


@pytest.mark.parametrize("name", ["METRICS", "COLOUR_PROFILE_MODES", "TARGET_MAX_PIXELS",
                                  "CROP_MODES", "DEDUPE_THRESHOLD", "DEFAULT_DPI", "DPI_RANGE",
                                  "AUGMENT_SETS", "IDENTICAL_PHOTO_MODES"])
def test_the_modules_that_use_a_value_import_it_from_the_light_module(name):
    # Declared once: the module's name is the light module's object, not a copy.
    assert _values_of_their_modules()[name] is getattr(choices, name)


def test_the_built_in_matchers_are_those_help_lists():
    # In a fresh interpreter: the table holds the built-in matchers only, none a test added.
    code = ("from mosaicist.match import MATCHERS\n"
            "print(list(dict.fromkeys(m.search for m in MATCHERS.values())))\n"
            "print(list(dict.fromkeys(d for m in MATCHERS.values() for d in m.devices)))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    searches, devices = run.stdout.splitlines()
    assert searches == repr(list(choices.BUILT_IN_SEARCHES))
    assert devices == repr(list(choices.BUILT_IN_DEVICES))


def test_help_reads_the_matchers_table_once_it_is_imported(monkeypatch):
    # A plugin registers (or unregisters) a matcher after importing the matchers: help
    # then lists the table as it is.
    from mosaicist import cli
    from mosaicist.match import MATCHERS

    class Plugin:
        search = "nearest-colour"
        devices = ("cpu", "tpu")

    monkeypatch.setattr(MATCHERS, "values", lambda: [Plugin()])
    assert cli._searches() == ["nearest-colour"] and cli._devices() == ["cpu", "tpu"]
    monkeypatch.delitem(sys.modules, "mosaicist.match")
    assert cli._searches() == list(choices.BUILT_IN_SEARCHES)
    assert cli._devices() == list(choices.BUILT_IN_DEVICES)
