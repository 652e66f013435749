"""What the command line says: summaries in the right number, help as the user types it."""

from __future__ import annotations

import re

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mosaicist import cli
from mosaicist.cli import main


def run(args, **extra):
    return CliRunner().invoke(main, [str(arg) for arg in args], **extra)


def photo(path, seed, size=12):
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def twins(tmp_path):
    """A library of one photo and its exact copy, plus a file that is no picture."""
    library = tmp_path / "library"
    library.mkdir()
    photo(library / "a.png", 1)
    (library / "b.png").write_bytes((library / "a.png").read_bytes())
    (library / "broken.png").write_bytes(b"not a picture")
    return library


def summary(result):
    """The summary: the last line on stderr (a skipped file is named before it)."""
    line = result.stderr.splitlines()[-1]
    assert line.startswith("mosaicist: "), result.stderr
    return line


def test_counts_agree_with_their_number():
    assert cli.counted(1, "tile") == "1 tile"
    assert cli.counted(0, "group") == "0 groups"
    assert cli.counted(1, "bit") == "1 bit"
    assert cli.counted(50_000, "tile") == "50,000 tiles"
    assert cli.counted(2, "near-duplicate") == "2 near-duplicates"


def test_make_summary_counts_one_tile_in_the_singular(tmp_path, twins):
    # It said "1 tiles (1 skipped) (1 near-duplicates dropped)", and "tint 0.5, overlay 0".
    target = photo(tmp_path / "target.png", 2, size=8)
    result = run(["make", target, "--tiles", twins, "--preset", "seed", "--cell", 8,
                  "--tile-px", 8, "--dedupe", "--tint", 0.5, "-o", tmp_path / "m.png",
                  "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 0, result.output
    line = summary(result)
    assert "1x1 cells, 1 tile (1 skipped, 1 near-duplicate dropped); index " in line, line
    assert line.endswith(", tint 0.5"), line
    assert "overlay" not in line and "1 tiles" not in line


def test_make_summary_names_an_overlay_alone(tmp_path, twins):
    target = photo(tmp_path / "target.png", 2, size=8)
    result = run(["make", target, "--tiles", twins, "--preset", "seed", "--cell", 8,
                  "--tile-px", 8, "--overlay", 0.25, "-o", tmp_path / "m.png",
                  "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 0, result.output
    line = summary(result)
    assert line.endswith(", overlay 0.25") and "tint" not in line, line


def test_index_summary_counts_groups_in_the_right_number(tmp_path, twins):
    # It said "1 near-duplicates in 1 groups", and "0 skipped in 0.01 s" as if the
    # skipping had taken the time.
    result = run(["index", twins, "--tile-px", 8, "--duplicates",
                  "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 0, result.output
    line = summary(result)
    # The index keeps near-duplicates ('make --dedupe' drops them); the broken file was tried.
    assert re.search(r"^mosaicist: 2 tiles of 8 px from \S+ in \d+\.\d\d s: 3 decoded, "
                     r"0 unchanged, 0 removed, 1 skipped; 1 near-duplicate in 1 group at "
                     r"--dedupe 6; index at ", line), line
    assert result.stdout.splitlines() == ["a.png", "    b.png  (0 bits)"]


def test_index_summary_says_when_there_are_no_near_duplicates(tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    for seed in range(3):
        photo(library / f"p{seed}.png", seed)
    result = run(["index", library, "--tile-px", 8, "--duplicates",
                  "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 0, result.output
    line = summary(result)
    assert "; no near-duplicates at --dedupe 6; index at " in line, line
    assert "0 groups" not in line and result.stdout == ""


def help_pages():
    for name in main.commands:
        result = run([name, "--help"], terminal_width=80)
        assert result.exit_code == 0, result.output
        yield name, result.output


def test_help_never_breaks_a_flag_across_lines():
    # '--use-all' showed "(--min-" at a line's end and "uses 1)" on the next.
    for name, text in help_pages():
        broken = [line for line in text.splitlines() if re.search(r"\w-$", line)]
        assert broken == [], (name, broken)
    make_help = dict(help_pages())["make"]
    assert "(--min-uses 1)" in make_help
    assert "row, col, tile, distance" in " ".join(make_help.split())


def test_help_shows_values_as_the_user_types_them():
    # Click's type names (TEXT, INTEGER, PATH) where the README says SOURCE, PX, DIR...;
    # defaults as Python writes them: 12.0, 1500000000.
    for name, text in help_pages():
        options = text.split("Options:")[1].split("Examples:")[0]
        rows = [line for line in options.splitlines() if line.lstrip().startswith("-")]
        typed = [row for row in rows
                 if re.search(r"\b(TEXT|INTEGER|FLOAT|PATH)( RANGE)?\b", row)]
        assert typed == [], (name, typed)
        flat = " ".join(options.split())
        defaults = re.findall(r"\[default: [^\]]*\]", flat)
        assert defaults, name
        # 12.0, not 127.0.0.1
        python_floats = [shown for shown in defaults
                         if re.search(r"(?<![.\d])\d+\.0\b(?!\.)", shown)]
        assert python_floats == [], (name, python_floats)
    make_help = " ".join(dict(help_pages())["make"].split())
    assert "[default: 12]" in make_help and "[default: 1,500,000,000]" in make_help
    assert "--tiles SOURCE" in make_help and "--cache-dir DIR" in make_help
    batch_help = dict(help_pages())["batch"]
    assert "-o, --output-dir OUTDIR" in batch_help


def test_ranges_are_said_in_words():
    # '--port N ... [default: 0; 0<=x<=65535]', '[x>=1]', and the same in the error.
    for name, text in help_pages():
        assert not re.search(r"x[<>]=?|[<>]=?x", text), name
    assert "[default: 8000; 0 to 65535]" in " ".join(dict(help_pages())["live"].split())
    result = run(["view", "m.dzi", "--port", 70000])
    assert result.exit_code == 1
    assert result.stderr == "mosaicist: error: --port must be between 0 and 65535, got 70000\n"


def test_help_wraps_hyphenated_words_whole():
    formatter = cli._HelpFormatter(width=30)
    formatter.write_dl([("--use-all", "Use every tile at least once (--min-uses 1).")])
    text = formatter.getvalue()
    assert "--min-uses 1" in text and "\u2011" not in text, text
    assert isinstance(formatter, click.HelpFormatter)


@pytest.mark.parametrize(("arguments", "hint"), [
    (["make", "t.png", "--tiles"], "(see 'mosaicist make --help')"),
    (["index", "--tile-px"], "(see 'mosaicist index --help')"),
    (["score", "m.png", "t.png", "--json"], "(see 'mosaicist score --help')"),
])
def test_a_flag_without_its_value_points_to_its_commands_help(arguments, hint):
    # "Option '--tiles' requires an argument (see 'mosaicist --help')": the main help,
    # which lists no --tiles.
    result = run(arguments)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(hint), result.stderr
    assert "requires an argument" in lines[0]


def test_live_help_shows_the_walls_own_defaults():
    # Written by hand in the help: they must stay those a new event gets.
    from mosaicist.live._event import LIVE_DEFAULTS
    from mosaicist.options import MosaicOptions

    wall = MosaicOptions(**LIVE_DEFAULTS)
    text = " ".join(dict(help_pages())["live"].split())
    for flag, value in (("--tile-px PX", wall.tile_px), ("--match-px PX", wall.match_px),
                        ("--tint A", f"{wall.tint:g}"), ("--crop [centre|subject]", wall.crop),
                        ("--metric [seed|lab|oklab]", wall.metric)):
        described = text.split(flag, 1)[1]
        assert described[described.index("[default: "):].startswith(f"[default: {value}]"), \
            (flag, described)
    score_help = " ".join(dict(help_pages())["score"].split())
    assert "--cell PX Target pixels per cell side that the mosaic was made with" in score_help


# --- notes and messages name what the user typed ---------------------------------------------

def test_make_notes_name_the_flags(tmp_path, twins):
    # "note: detail applies only with adaptive cells (adaptive 0 here)": Python names,
    # where the user had typed --detail.
    target = photo(tmp_path / "target.png", 2, size=8)
    result = run(["make", target, "--tiles", twins, "--preset", "seed", "--cell", 8,
                  "--tile-px", 8, "--detail", 0.5, "-o", tmp_path / "m.png",
                  "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 0, result.output
    assert ("mosaicist: note: --detail applies only with adaptive cells (--adaptive 0 here); "
            "it is ignored") in result.stderr.splitlines(), result.stderr


def test_batch_says_the_settings_notes_once_as_make_does(tmp_path, twins):
    """A batch's makes are quiet: --detail without --adaptive, and --assign without a
    repetition limit, changed nothing without a word there."""
    targets = [photo(tmp_path / f"t{index}.png", index + 2, size=8) for index in range(2)]
    common = ["--tiles", twins, "--preset", "seed", "--cell", 8, "--tile-px", 8, "--detail",
              0.5, "--assign", "greedy", "--cache-dir", tmp_path / "cache"]
    made = run(["make", targets[0], "-o", tmp_path / "m.png", *common])
    batch = run(["batch", *targets, "-o", tmp_path / "out", "--workers", 1, *common])
    assert made.exit_code == 0 and batch.exit_code == 0, (made.output, batch.output)
    expected = [
        "mosaicist: note: --detail applies only with adaptive cells (--adaptive 0 here); "
        "it is ignored",
        "mosaicist: note: --assign greedy applies only with a repetition limit (--max-uses, "
        "--min-uses or --min-spacing); each cell takes its nearest tile"]
    for result in (made, batch):
        notes = [line for line in result.stderr.splitlines() if "note:" in line]
        assert notes == expected, result.stderr


def test_the_note_of_preset_settings_dropped_names_the_flags(tmp_path, twins):
    # "approximate search on cpu runs without the preset's max_uses, min_spacing, ...".
    target = photo(tmp_path / "target.png", 2, size=8)
    result = run(["make", target, "--tiles", twins, "--search", "approximate", "--cell", 8,
                  "--tile-px", 8, "-o", tmp_path / "m.png", "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 0, result.output
    note = next(line for line in result.stderr.splitlines() if "runs without" in line)
    assert note.startswith("mosaicist: note: --search approximate on --device cpu runs without "
                           "the preset's --max-uses, --min-spacing, --tint"), note
    assert "_" not in note, note


def test_the_python_api_notes_keep_the_parameter_names(tmp_path, twins, capsys):
    from mosaicist import make_mosaic

    target = np.asarray(Image.open(photo(tmp_path / "target.png", 2, size=8)))
    make_mosaic(target, str(twins), preset="seed", cell_px=8, tile_px=8, detail=0.5,
                quiet=False, cache_dir=tmp_path / "cache")
    assert ("mosaicist: note: detail applies only with adaptive cells (adaptive 0 here); it is "
            "ignored") in capsys.readouterr().err


def test_sizing_counts_carry_separators_and_agree():
    from mosaicist.errors import OptionError
    from mosaicist.sizing import plan_sizes

    with pytest.raises(OptionError, match=r"at most 2,240 cells \(1 px wide\)$"):
        plan_sizes((56, 40), cells=10_000)
    with pytest.raises(OptionError, match=r"holds: at most 1 cell \(1 px wide\)$"):
        plan_sizes((1, 1), cells=2)
    with pytest.raises(OptionError, match=r"needs tiles about 23,622 px wide .* the 1,024 px"):
        plan_sizes((56, 40), cell_px=8, print_size="1000x1000cm")


def test_assignment_counts_carry_separators_and_agree():
    from mosaicist.errors import MosaicistError
    from mosaicist.match._assign import ShortLists, check_feasible, verify_placement

    def said(call, *arguments):
        with pytest.raises(MosaicistError) as error:
            call(*arguments)
        return str(error.value)

    # "1 cells with at most 1 use per tile (max_uses 1) need at least 1 tiles".
    assert said(check_feasible, 1, 0, 1).startswith(
        "1 cell with at most 1 use per tile (max_uses 1) needs at least 1 tile, but the "
        "library has 0")
    assert said(check_feasible, 2240, 30, 1).startswith(
        "2,240 cells with at most 1 use per tile (max_uses 1) need at least 2,240 tiles")
    assert said(check_feasible, 5000, 3000, None, None, None, 1, 2).startswith(
        "min_uses 2 needs 6,000 cells for the 3,000 tiles, but the grid has 5,000")
    assert said(verify_placement, np.array([0, 0, -1]), 1, 3, None, 1) == \
        "1 cell could not be given a tile"
    assert said(verify_placement, np.array([0, 0, 1]), 1, 3, None, 1, 2, 2) == \
        "1 tile is used fewer than min_uses 2 times"
    assert said(verify_placement, np.array([0, 0, 1]), 1, 3, None, 2) == \
        "1 pair of equal tiles is closer than min_spacing 2"
    assert str(ShortLists(np.array([3]))) == "1 tile could not be given its minimum of uses"
    assert str(ShortLists(np.arange(1500))).startswith("1,500 tiles could not be given their")


def test_a_skipped_library_file_is_a_warning(tmp_path, twins):
    # "mosaicist: skipped broken.png: ...", where the folder's others say "warning:".
    result = run(["index", twins, "--tile-px", 8, "--cache-dir", tmp_path / "cache"])
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stderr.splitlines() if "broken.png" in line]
    assert len(skipped) == 1, result.stderr
    assert skipped[0].startswith("mosaicist: warning: skipped broken.png: "), skipped


class _FakeDevice:
    """What ``torch.device`` gives, for a machine without PyTorch's CUDA."""

    def __init__(self, spec: str) -> None:
        self.type, _, index = spec.partition(":")
        self.index = int(index) if index else None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def _fake_torch(available: bool, count: int):
    from types import SimpleNamespace

    cuda = SimpleNamespace(is_available=lambda: available, device_count=lambda: count)
    return SimpleNamespace(device=_FakeDevice, cuda=cuda)


def test_unavailable_cuda_is_said_without_python_calls():
    # "(torch.cuda.is_available() is false)": a Python call, quoted to the user.
    from mosaicist.errors import OptionError
    from mosaicist.match._gpu import _resolve_device

    with pytest.raises(OptionError) as error:
        _resolve_device(_fake_torch(False, 0), "cuda", probe=False)
    message = error.value.message(lambda name: "--" + name)
    assert message == ("--device cuda asked for but CUDA is not available (PyTorch finds no "
                       "usable NVIDIA GPU); use --device cpu or a CUDA build of PyTorch")
    with pytest.raises(OptionError) as error:
        _resolve_device(_fake_torch(True, 1), "cuda:1", probe=False)
    # "only 1 CUDA device(s) are visible".
    assert "but only 1 CUDA device is visible (cuda:0; " in str(error.value), str(error.value)
    with pytest.raises(OptionError) as error:
        _resolve_device(_fake_torch(True, 2), "cuda:2", probe=False)
    assert "but only 2 CUDA devices are visible (cuda:0 to cuda:1; " in str(error.value)


def test_score_names_the_placements_file_whose_grid_differs(tmp_path):
    # "the placements are 2x1 cells but target.png has 4x2 cells at --cell 4": which file?
    from mosaicist.placements import Placements

    target = photo(tmp_path / "target.png", 2, size=16)
    Image.open(target).crop((0, 0, 16, 8)).save(target)
    mosaic = tmp_path / "mosaic.png"
    Image.open(target).save(mosaic)
    placements = tmp_path / "picks.csv"
    Placements(1, 2, np.zeros(2, np.int64), np.zeros(2), ["a.png", "a.png"]).write(placements)
    result = run(["score", mosaic, target, "--cell", 4, "--placements", placements])
    assert result.exit_code == 1, result.output
    assert result.stderr == (f"mosaicist: error: {placements}: the placements are 2x1 cells but "
                             f"{target} has 4x2 cells at --cell 4\n")


def test_view_of_a_picture_says_what_view_takes(tmp_path):
    # "out.png: not a mosaicist viewer page (not UTF-8 text)": nothing of what to give.
    picture = photo(tmp_path / "out.png", 1)
    result = run(["view", picture, "--no-browser"])
    assert result.exit_code == 1, result.output
    assert result.stderr == (f"mosaicist: error: {picture}: not a mosaicist viewer page; give "
                             "NAME.dzi or NAME.html, as 'mosaicist make -o NAME.dzi' writes "
                             "them, or their folder\n")


def test_score_calls_the_placements_file_a_file(tmp_path):
    # "p.json: the JSON file is also the placements": the other inputs are "the mosaic",
    # "the target"; this one is a file the user named.
    picks = tmp_path / "p.json"
    result = run(["score", tmp_path / "m.png", tmp_path / "t.png", "--placements", picks,
                  "--json", picks])
    assert result.exit_code == 1, result.output
    assert result.stderr == (f"mosaicist: error: {picks}: the JSON file is also the placements "
                             "file; give each its own file\n")
