"""Command-line behaviour fixed in session 33: each test failed before its fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mosaicist.cli import main
from mosaicist.paths import dangling_link


def _loop(folder: Path, name: str) -> Path:
    """``name`` in ``folder``: a link to a link back to it."""
    first, second = folder / name, folder / f"other-{name}"
    os.symlink(second.name, first)
    os.symlink(first.name, second)
    return first


def test_dangling_link_tells_a_loop_a_missing_target_and_a_plain_missing_name(tmp_path):
    loop = _loop(tmp_path, "a.json")
    assert dangling_link(loop) == "a link that loops back on itself"
    broken = tmp_path / "b.json"
    os.symlink("gone.json", broken)
    assert dangling_link(broken) == "a link to gone.json, which is not there"
    assert dangling_link(tmp_path / "never.json") is None
    (tmp_path / "real.json").write_text("{}")
    os.symlink("real.json", tmp_path / "fine.json")
    assert dangling_link(tmp_path / "fine.json") is None


@pytest.mark.parametrize("arguments", [["view"], ["render", "--tiles", "x", "-o", "out.png"], ["index"]])
def test_a_loop_of_links_is_named_as_one_not_as_missing(tmp_path, arguments):
    loop = _loop(tmp_path, "mosaic.html")
    result = CliRunner().invoke(main, [*arguments, str(loop)])
    assert result.exit_code != 0
    assert "loops back on itself" in result.output, result.output
    assert "Traceback" not in result.output
