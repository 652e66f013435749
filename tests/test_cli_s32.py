"""The command line from a user's terminal: its standard output full or gone, and a terminal.

``mosaicist --help > /dev/full`` (the shell's redirection onto a full disk),
``mosaicist | true`` (a reader that leaves before the help is written), and
what reaches a terminal after the command's last line.
"""

from __future__ import annotations

import errno
import os
import pathlib
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mosaicist.cli import main

#: Bound of each subprocess here; reached only when one hangs.
PATIENCE = 60


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("arguments", [[], ["--help"], ["--version"]],
                         ids=["bare", "help", "version"])
def test_help_onto_a_full_disk_is_one_line_not_a_traceback(arguments):
    # The group's own help and version are printed while click parses the arguments,
    # where click's handling of an OSError is a traceback; the bare command's help by
    # the command line itself, unguarded.
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "mosaicist", *arguments],
                                stdout=full, stderr=subprocess.PIPE, text=True,
                                env=_environment(), timeout=PATIENCE)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr == "mosaicist: error: No space left on device\n"
    assert result.returncode == 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
@pytest.mark.parametrize("arguments", [[], ["--help"]], ids=["bare", "help"])
def test_help_to_a_reader_gone_ends_quietly_as_sigpipe_would(arguments):
    # 'mosaicist --help | true': as 'mosaicist make --help | true' already did, status
    # 141 and nothing on stderr (click's own handling said nothing and exited 1; the
    # bare command's help raised a traceback).
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before anything is written
    try:
        result = subprocess.run([sys.executable, "-m", "mosaicist", *arguments],
                                stdout=writer, stderr=subprocess.PIPE, text=True,
                                env=_environment(), timeout=PATIENCE)
    finally:
        os.close(writer)
    assert result.stderr == ""
    assert result.returncode == 141


def test_score_json_that_cannot_be_written_names_the_file(tmp_path, monkeypatch):
    # A full disk while the metrics were written: "No space left on device" alone,
    # which named no file to make room for.
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        tmp_path / "target.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
        tmp_path / "mosaic.png")
    report = tmp_path / "score.json"
    written = pathlib.Path.write_text

    def full_disk(self, *arguments, **keywords):
        if self.parent == tmp_path and ".part" in self.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return written(self, *arguments, **keywords)

    monkeypatch.setattr(pathlib.Path, "write_text", full_disk)
    result = CliRunner().invoke(main, ["score", str(tmp_path / "mosaic.png"),
                                       str(tmp_path / "target.png"), "--json", str(report)])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"mosaicist: error: {report}: cannot write the JSON file: No space left on device")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mosaic.png", "target.png"]


# The command line run as 'mosaicist' does (mosaicist.__main__.run), in a terminal,
# with Numba's error messages made before the command, as the tile assignment's
# solver has Numba import a module that makes one.
NUMBA_MESSAGE_THEN_VERSION = textwrap.dedent("""
    import sys
    from mosaicist import cli
    from mosaicist.__main__ import run

    command = cli.main

    def main():
        from numba.core import errors
        errors.termcolor().errmsg("an error message made as a module is imported")
        command()

    cli.main = main
    sys.argv = ["mosaicist", "--version"]
    run()
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
def test_nothing_but_the_output_reaches_the_terminal_after_it():
    # Numba coloured its messages with colorama, whose exit hook wrote ESC [0m to the
    # terminal after the command's last line (NO_COLOR set or not).
    pytest.importorskip("numba")
    pytest.importorskip("colorama")
    import pty

    environment = {key: value for key, value in _environment().items()
                   if key != "NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING"}
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-c", NUMBA_MESSAGE_THEN_VERSION],
                                   stdin=terminal, stdout=terminal, stderr=terminal,
                                   env=environment)
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            ready, _, _ = select.select([controller], [], [], PATIENCE)
            if not ready:
                break
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other side closed (Linux)
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=PATIENCE) == 0, shown
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert shown.startswith(b"mosaicist, version "), shown
    assert b"\x1b" not in shown, shown


def test_render_finds_a_tile_folder_whose_name_is_not_utf8(tmp_path):
    # The index's key escapes such a name ('lib\xfe' as text); the placements file
    # recorded that escape as the source, which 'render' then looked for and missed.
    folder = os.path.join(os.fsencode(tmp_path), b"lib\xfe")
    try:
        os.mkdir(folder)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    rng = np.random.default_rng(3)
    for number in range(6):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            os.path.join(folder, b"tile%d.png" % number))
    target = tmp_path / "target.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(target)
    cache = tmp_path / "cache"
    made, again, placements = tmp_path / "made.png", tmp_path / "again.png", tmp_path / "p.json"
    runner = CliRunner()
    result = runner.invoke(main, ["make", str(target), "--tiles", os.fsdecode(folder),
                                  "--cell", "16", "--tile-px", "16", "--preset", "seed", "-q",
                                  "--cache-dir", str(cache), "--placements", str(placements),
                                  "-o", str(made)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["render", str(placements), "-o", str(again), "-q",
                                  "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == made.read_bytes()


def test_an_output_linked_to_a_photo_of_the_library_is_refused(tmp_path):
    # The output is written through a link to the file it names; the check looked at
    # the link itself (outside the library), and the photo was replaced by the mosaic.
    rng = np.random.default_rng(4)
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for number in range(6):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            tiles / f"t{number}.png")
    target = tmp_path / "target.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(target)
    photo = tiles / "t5.png"
    before = photo.read_bytes()
    link = tmp_path / "out.png"
    link.symlink_to(photo)
    result = CliRunner().invoke(main, [
        "make", str(target), "--tiles", str(tiles), "--cell", "16", "--tile-px", "16", "-q",
        "--preset", "seed", "--cache-dir", str(tmp_path / "cache"), "-o", str(link)])
    assert result.exit_code == 1, result.output
    assert "is also the photo t5.png of the tile library" in result.stderr
    assert photo.read_bytes() == before
