"""Fuzzing the commands: malformed placements, command lines and pictures never end in a traceback.

Every example must end either in success or in one line on stderr
(``mosaicist: error: ...``) with a non-zero exit: :class:`click.testing.CliRunner`
records any other exception as ``result.exception``. Examples are derived
from a fixed seed (``derandomize``) so a run in CI is repeatable; set
``MOSAICIST_FUZZ_EXAMPLES`` to search longer.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

EXAMPLES = int(os.environ.get("MOSAICIST_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check(result) -> None:
    """Success, or one error line and a non-zero exit; never another exception."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mosaicist: error: "), result.output


def _invoke(arguments: list[str]):
    from click.testing import CliRunner

    from mosaicist.cli import main

    return CliRunner().invoke(main, arguments, catch_exceptions=True)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A target, six tiles, and placements made from them (with gains, tints, flips)."""
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(11)
    tiles = root / "tiles"
    (tiles / "sub").mkdir(parents=True)
    for index in range(6):
        folder = tiles / "sub" if index % 2 else tiles
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
            folder / f"t{index}.png")
    target = root / "target.png"
    Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(target)
    placements = root / "p.json"
    os.environ["MOSAICIST_CACHE_DIR"] = str(root / "cache")
    made = _invoke(["make", str(target), "--tiles", str(tiles), "--cell", "8", "--tile-px", "8",
                    "--augment", "flips", "--tint", "0.3", "--contrast", "0.5", "-q",
                    "-o", str(root / "m.png"), "--placements", str(placements),
                    "--cache-dir", str(root / "cache")])
    assert made.exit_code == 0, made.output
    return root, target, tiles, json.loads(placements.read_text())


_JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["../x.png", "/etc/passwd", "t0.png", "sub/t1.png", "seed", "identity",
                     "mosaicist-placements", "", "\0"]),
)
_JSON = st.recursive(_JSON_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def _paths(document: object, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON document, as a path of keys and indexes (lists cut to 3)."""
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document[:3]):
            found += _paths(value, (*prefix, index))
    return found


def _replace(document: object, path: tuple, value: object) -> object:
    if not path:
        return value
    head, *rest = path
    copy = document.copy()  # type: ignore[attr-defined]
    copy[head] = _replace(copy[head], tuple(rest), value)
    return copy


@FUZZ
@given(data=st.data())
def test_fuzzed_placements_never_give_a_traceback(workspace, data):
    root, target, tiles, document = workspace
    for _ in range(data.draw(st.integers(0, 3), label="changes")):
        places = _paths(document)
        place = data.draw(st.sampled_from(places), label="where")
        document = _replace(document, place, data.draw(_JSON, label="value"))
    path = root / "fuzzed.json"
    path.write_text(json.dumps(document))
    _check(_invoke(["render", str(path), "-o", str(root / "r.png"), "-q",
                    "--tiles", str(tiles), "--cache-dir", str(root / "cache")]))
    _check(_invoke(["score", str(root / "m.png"), str(target), "--cell", "8",
                    "--placements", str(path)]))


_HOSTILE_VALUES = st.sampled_from(["-1", "0", "1e309", "nan", "-inf", "", "x", "\0", "9" * 30,
                                   "1:1", "../x"])


@st.composite
def _setting_flag(draw) -> list[str]:
    """A flag of ``make`` from the settings' declarations, with a valid or a hostile value."""
    from mosaicist.options import settings

    declared = draw(st.sampled_from([item for item in settings() if item.flag]))
    if draw(st.booleans()):
        return [declared.flag, draw(_HOSTILE_VALUES)]
    if declared.choices:
        value = draw(st.sampled_from(declared.choices))
    elif declared.name == "search":
        value = draw(st.sampled_from(["exact", "approximate", "nope"]))
    elif declared.name == "device":
        value = draw(st.sampled_from(["cpu", "cuda", "tpu"]))
    elif declared.kind is int:
        low = int(declared.low or 0)
        # Sizes stay small: the examples must run in moments.
        value = draw(st.integers(low, min(int(declared.high or 64), low + 12)))
    else:
        value = draw(st.floats(float(declared.low or 0), float(declared.high or 2)))
    return [declared.flag, str(value)]


_OTHER_FLAGS = st.sampled_from([["--use-all"], ["-q"], ["--bogus"], ["--placements", "p.csv"],
                                ["--report", "r.json"], ["--use-all", "--max-uses", "1"], []])


@FUZZ
@given(flags=st.lists(st.one_of(_setting_flag(), _OTHER_FLAGS), max_size=4),
       output=st.sampled_from(["m.png", "m.jpg", "m.dzi", "m.tif", "m.txt", "",
                               "none/m.png"]))
def test_fuzzed_make_command_lines_never_give_a_traceback(workspace, flags, output):
    root, target, tiles, _ = workspace
    out = root / "out"
    out.mkdir(exist_ok=True)
    arguments = ["make", str(target), "--tiles", str(tiles), "--cache-dir", str(root / "cache"),
                 "-o", str(out / output) if output else ""]
    for flag in flags:
        arguments += [str(out / part) if part.endswith((".csv", ".json")) else part
                      for part in flag]
    _check(_invoke(arguments))


def _picture(kind: str) -> bytes:
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=kind)
    return buffer.getvalue()


_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif",
            "WEBP": ".webp"}


@FUZZ
@given(kind=st.sampled_from(sorted(_FORMATS)), cut=st.floats(0.0, 1.0),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6))
def test_broken_pictures_never_give_a_traceback(workspace, kind, cut, flips):
    root, target, tiles, _ = workspace
    content = bytearray(_picture(kind))
    for where, byte in flips:
        content[int(where * (len(content) - 1))] = byte
    content = content[:max(0, int(cut * len(content)))] if cut < 0.98 else content
    broken = root / f"broken{_FORMATS[kind]}"
    broken.write_bytes(bytes(content))
    # As a target.
    _check(_invoke(["make", str(broken), "--tiles", str(tiles), "--cell", "4", "--tile-px", "4",
                    "-q", "-o", str(root / "b.png"), "--cache-dir", str(root / "cache")]))
    # As one tile of a library: reported and skipped, never fatal.
    library = root / f"library-{kind}"
    library.mkdir(exist_ok=True)
    for source in tiles.glob("*.png"):
        (library / source.name).write_bytes(source.read_bytes())
    (library / broken.name).write_bytes(bytes(content))
    result = _invoke(["index", str(library), "--tile-px", "4", "--cache-dir",
                      str(root / "cache")])
    _check(result)
    assert result.exit_code == 0, result.output
    _check(_invoke(["score", str(broken), str(target), "--cell", "4"]))
