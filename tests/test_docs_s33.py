"""README.md and docs/ against the code they describe: flags, defaults, names, links.

Each test names the passage it holds to and fails when the passage and the code
part; fix whichever is wrong, not the test alone. (tests/test_docs.py checks the
option table's declared defaults and the settings' version; tests/test_docs_claims.py
the crops' and heights' claims.)
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from mosaicist.options import PRESETS, MosaicOptions, settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PACKAGE = ROOT / "src" / "mosaicist"


def readme() -> str:
    return README.read_text()


# -- links -------------------------------------------------------------------------------

def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (repeats get -1, -2...), code blocks aside."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        heading = None if in_code else re.match(r"#{1,6}\s+(.*)$", line)
        if heading:
            anchor = github_anchor(heading.group(1))
            repeat = seen.get(anchor, 0)
            seen[anchor] = repeat + 1
            found.add(anchor if repeat == 0 else f"{anchor}-{repeat}")
    return found


def relative_links(page: Path) -> list[str]:
    return [link for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text())
            if not re.match(r"[a-z]+:", link)]


def test_the_anchor_rule():
    assert github_anchor("Subject-aware crops (issue 12), 1 Dec 2026") == \
        "subject-aware-crops-issue-12-1-dec-2026"
    assert github_anchor("The default look: every photo once, colour-corrected") == \
        "the-default-look-every-photo-once-colour-corrected"
    assert github_anchor("Large mosaics, Deep Zoom and the viewer") == \
        "large-mosaics-deep-zoom-and-the-viewer"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda page: page.name)
def test_every_link_between_pages_resolves(page):
    """README and docs/: each relative link names a file there, and its #anchor a heading."""
    broken = []
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no such heading in {target.relative_to(ROOT)}")
    assert not broken, broken


# -- the command line's synopsis ---------------------------------------------------------

def synopsis() -> dict[str, set[str]]:
    """The flags each command's synopsis in README's "Command line" names."""
    block = re.search(r"## Command line\n\n```\n(.*?)```", readme(), re.DOTALL)
    assert block is not None, "no synopsis under ## Command line"
    flags: dict[str, set[str]] = {}
    command = None
    # "[--dzi-...]" stands for the Deep Zoom settings.
    text = block.group(1).replace("--dzi-...", "--dzi-tile-size --dzi-overlap --dzi-format")
    for line in text.splitlines():
        start = re.match(r"mosaicist (\w+) ", line)
        if start:
            command = start.group(1)
            flags[command] = set()
        assert command is not None, line
        flags[command] |= set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-o)\b", line))
    return flags


def command_flags(name: str) -> set[str]:
    """The flags of a command, as the synopsis writes them (-o for the output, no --help)."""
    from mosaicist.cli import main

    flags = set()
    for parameter in main.commands[name].params:
        names = [*parameter.opts, *parameter.secondary_opts]
        if "-o" in names:
            flags.add("-o")
            continue
        flags |= {flag for flag in names if flag.startswith("--")}
    return flags - {"--help"}


def test_the_synopsis_covers_the_commands():
    assert set(synopsis()) == {"make", "index", "render", "batch", "view", "studio", "live",
                               "score"}


@pytest.mark.parametrize("command", ["make", "index", "render", "view", "score"])
def test_the_synopsis_names_every_flag_of_a_command_and_no_other(command):
    """README, Command line: a flag added, renamed or removed shows in the synopsis."""
    written = synopsis()[command]
    actual = command_flags(command)
    assert written - actual == set(), f"named but not flags of {command}"
    assert actual - written == set(), f"flags of {command} the synopsis leaves out"


def test_the_batch_synopsis_names_its_own_flags_and_takes_makes():
    """README: `mosaicist batch TARGET... [...] [make options]`."""
    written = synopsis()["batch"]
    actual = command_flags("batch")
    assert written <= actual
    assert actual - written <= command_flags("make"), "batch flags neither named nor make's"


# -- the option table --------------------------------------------------------------------

def table_row(flag: str) -> list[str]:
    """The cells of the option table's row that starts with ``flag``."""
    row = re.search(rf"^\| `{re.escape(flag)}[ `,][^\n]*$", readme(), re.MULTILINE)
    assert row is not None, f"no option table row for {flag}"
    # Cells part at " | " (an empty one is "| |"); "\\|" inside a cell is a written bar.
    return [cell.strip() for cell in re.split(r" \|(?= )", row.group(0).strip("|"))]


def parse_value(text: str):
    text = text.strip().strip("`")
    if text == "none":
        return None
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return text


def resolved(name: str, preset: str):
    return getattr(MosaicOptions(preset=preset), name)


#: Rows whose default cell reads "VALUE (`PRESET`, ...: VALUE, ...)".
PRESET_ROWS = {"--tint": "tint", "--contrast": "contrast", "--chroma": "chroma",
               "--max-uses": "max_uses", "--min-spacing": "min_spacing", "--crop": "crop",
               "--colour-profiles": "colour_profiles"}


@pytest.mark.parametrize(("flag", "name"), PRESET_ROWS.items())
def test_the_table_gives_each_named_presets_value(flag, name):
    """README option table: `0 (`balanced`: 1)`, `subject` (`seed`: `centre`)..."""
    default = table_row(flag)[1]
    match = re.fullmatch(r"(.+?) \((.+)\)", default)
    assert match is not None, default
    base = parse_value(match.group(1))
    # The value outside the brackets is the declared one (the seed's) or the default preset's.
    assert base in (resolved(name, "seed"), resolved(name, "balanced")), default
    for names, value in re.findall(r"((?:`\w+`(?:, )?)+): ([^,;)]+)", match.group(2)):
        for preset in re.findall(r"`(\w+)`", names):
            assert resolved(name, preset) == parse_value(value), f"{flag} under {preset}"


def preset_bundle(text: str) -> dict:
    """`--max-uses 1 --min-spacing 5 --crop subject` -> the settings they name."""
    by_flag = {declared.flag: declared.name for declared in settings() if declared.flag}
    pairs = re.findall(r"(--[a-z-]+) (\S+)", text)
    return {by_flag[flag]: parse_value(value) for flag, value in pairs}


@pytest.mark.parametrize("preset", ["balanced", "varied"])
def test_the_preset_row_gives_each_bundle_whole(preset):
    """README, `--preset`: the flags listed for a preset are exactly its settings."""
    cell = table_row("--preset")[2]
    listed = re.search(rf"`{preset}`[^`]*: `([^`]+)`", cell)
    assert listed is not None, f"no flags listed for {preset}"
    assert preset_bundle(listed.group(1)) == PRESETS[preset].settings
    assert PRESETS["seed"].settings == {}, "the row says seed is the declared defaults"


def test_the_table_defaults_of_sizes_and_files():
    """README option table: defaults and ranges not checked in test_docs.py."""
    from mosaicist.dedupe import DEFAULT_THRESHOLD
    from mosaicist.options import setting_named
    from mosaicist.render._deepzoom import DEFAULT_QUALITY as DZI_QUALITY
    from mosaicist.render._writers import DEFAULT_QUALITY

    assert table_row("--dedupe")[1] == f"off ({DEFAULT_THRESHOLD} when given alone)"
    assert setting_named("dedupe").default is None
    adaptive = [parse_value(value) for value in table_row("--adaptive DEPTH")[1].split(", ")]
    assert adaptive == [setting_named("adaptive").default, setting_named("detail").default]
    assert table_row("--quality Q")[1] == f"{DEFAULT_QUALITY} ({DZI_QUALITY} for Deep Zoom tiles)"
    dzi = [parse_value(value) for value in table_row("--dzi-tile-size")[1].split(", ")]
    assert dzi == [setting_named(name).default
                   for name in ("dzi_tile_size", "dzi_overlap", "dzi_format")]
    for flag, name in (("--cell PX", "cell_px"), ("--tile-px PX", "tile_px")):
        low, high = map(int, re.search(r"\((\d+)-(\d+)\)", table_row(flag)[2]).groups())
        assert (low, high) == (setting_named(name).low, setting_named(name).high), flag
    assert table_row("--print WxH[cm\\|mm\\|in]")[1] == ", 300 with `--print`"
    assert MosaicOptions(print_size="60x40cm", cells=24).dpi == 300
    assert MosaicOptions().dpi is None
    # "`--tile-px` up to 64, else 32"
    assert table_row("--match-px PX")[1] == "`--tile-px` up to 64, else 32"
    assert MosaicOptions(tile_px=64).match_px == 64
    assert MosaicOptions(tile_px=65).match_px == 32


def test_the_tiles_and_output_defaults_are_the_commands():
    """README option table: `--tiles` defaults to `cifar10`, `-o` to `<target stem>-mosaic.png`."""
    from mosaicist.cli import main

    make = {parameter.name: parameter for parameter in main.commands["make"].params}
    assert table_row("--tiles SOURCE")[1] == f"`{make['tiles'].default}`"
    assert table_row("-o, --output OUT")[1] == "`<target stem>-mosaic.png`"
    assert "[default: <target stem>-mosaic.png]" in make["output"].help


def test_live_and_servers_port_and_rate_defaults():
    """README: live `--port` (8000), `--rate` (... 30); view and studio on a free port."""
    from mosaicist.cli import main

    def default(command: str, name: str):
        return next(parameter.default for parameter in main.commands[command].params
                    if parameter.name == name)

    text = readme()
    port = re.search(r"Other options: `--port` \((\d+)\), `--rate` \(photos per minute one "
                     r"device may\s+send, (\d+)\)", text)
    assert port is not None
    assert (default("live", "port"), default("live", "rate")) == tuple(map(int, port.groups()))
    assert "http://<address>:8000/" in text and default("live", "port") == 8000
    assert default("view", "port") == 0 and default("studio", "port") == 0
    assert "serves it on 127.0.0.1:<free port>" in text
    assert "serves 127.0.0.1:<free port>" in text


# -- files the text names ----------------------------------------------------------------

@pytest.fixture(scope="module")
def small_mosaic(tmp_path_factory):
    """A seed-preset mosaic with contrast, chroma and a greedy use cap, on 30 colours."""
    from conftest import make_colour_folder, noisy_target

    from mosaicist import make_mosaic

    root = tmp_path_factory.mktemp("docs-s33")
    folder = make_colour_folder(root / "tiles", 30)
    return make_mosaic(noisy_target(), str(folder), preset="seed", cell_px=8, tile_px=8,
                       contrast=0.5, chroma=1.0, max_uses=2, assign="greedy",
                       cache_dir=root / "cache")


def test_the_report_has_the_keys_the_table_lists(small_mosaic):
    """README `--report`: grid (rows, cols, cell_px), ..., timings (index, match, render, total)."""
    report = small_mosaic.report()
    cell = table_row("--report FILE.json")[2]
    listed = re.findall(r"(?:^|, )`(\w+)`(?: \(([^)]*)\))?", cell)
    assert {key for key, _ in listed} >= {"grid", "tiles", "timings", "assignment", "settings"}
    for key, inner in listed:
        assert key in report, key
        if key in ("settings", "metrics") or not isinstance(report[key], dict):
            continue  # "(every setting, ...)", "(below)"; "(sum of distances)"
        for item in inner.split(", "):
            # "lower bound" is lower_bound; "total seconds" is total, in seconds
            name = item.split(":")[0].strip().removesuffix(" seconds").replace(" ", "_")
            assert name in report[key], f"{key}.{name}"
    assert {"objective", "lower_bound", "gap", "certified"} <= set(report["assignment"])


def test_the_csv_columns_are_as_written(small_mosaic, tmp_path):
    """README `--placements`: the CSV header, the scored means where tiles are tinted, gains
    with `--contrast`, `chroma` with `--chroma`."""
    cell = table_row("--placements FILE")[2]
    columns = re.search(r"one row per cell, `([a-z_0-9,]+)` \(and `([a-z_0-9,]+)` where tiles "
                        r"are tinted or their contrast or chroma moved: [^;]+; `([a-z_0-9,]+)` "
                        r"with `--contrast`, `(\w+)` with `--chroma`\)", cell)
    assert columns is not None
    small_mosaic.placements.write(tmp_path / "p.csv")
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header == ",".join(columns.groups())


def test_deep_zoom_and_video_frame_names():
    """README: `NAME.dzi` writes `NAME_files/`, `NAME.html`, `NAME.viewer.json`; frames
    `<video stem>-<frame:06d>`."""
    from mosaicist.batch._targets import frame_stem
    from mosaicist.render import OUTPUT_FORMATS

    companions = [path.name for path, _ in OUTPUT_FORMATS[".dzi"].companions(Path("m.dzi"))]
    assert companions == ["m_files", "m.html", "m.viewer.json"]
    text = readme()
    for name in ("`NAME_files/<level>/<col>_<row>.<jpeg|png|webp>`", "`NAME.viewer.json`",
                 "`<video stem>-<frame:06d>.<format>`"):
        assert name in text, name
    assert frame_stem("clip", 7) == "clip-000007"


def test_the_limits_are_the_codes():
    """README, Large mosaics and Limits: the numbers refused by."""
    from mosaicist.imaging import TILE_MAX_PIXELS
    from mosaicist.placements import MAX_CELLS
    from mosaicist.render._writers import JPEG_MAX_SIDE, WEBP_MAX_PIXELS
    from mosaicist.render._writers import WEBP as WEBP_FORMAT

    text = readme()
    assert f"JPEG {JPEG_MAX_SIDE:,} px a side" in text
    assert f"WebP {WEBP_FORMAT.max_side:,})" in text
    assert f"limited to {WEBP_MAX_PIXELS // 1_000_000} megapixels" in text
    assert f"**Tiles and originals**: {TILE_MAX_PIXELS // 1_000_000} megapixels" in text
    assert f"at most {MAX_CELLS // 1_000_000} million\n  cells" in text


# -- installing and testing --------------------------------------------------------------

def extras() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(pyproject["project"]["optional-dependencies"])


def test_the_extras_table_lists_the_extras():
    """README, Extras: one row per extra of pyproject.toml, and no other."""
    section = readme().split("## Extras", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)) == extras()


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda page: page.name)
def test_every_install_command_names_extras_that_exist(page):
    for listed in re.findall(r'pip install "?\.\[([\w,]+)\]', page.read_text()):
        assert set(listed.split(",")) <= extras(), listed


def test_the_first_commands_are_what_installs_and_ci_run():
    """README's first block: install `.[fast]` and make; `bash scripts/test.sh`, as CI."""
    block = re.search(r"```bash\n(.*?)```", readme(), re.DOTALL).group(1)
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert commands == [
        'python3 -m pip install ".[fast]" && mosaicist make examples/starry_night.jpg',
        "bash scripts/test.sh",
    ]
    assert (ROOT / "examples" / "starry_night.jpg").is_file()
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith("#")]
    assert ci[-1] == "bash scripts/test.sh"
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert 'pip install -q -e ".[test]"' in script
    assert "ruff check src tests benchmarks" in script and "python3 -m mypy" in script
    assert "pytest -q -n 2" in script  # "in two processes, with pytest-xdist"


def test_the_cifar10_download_is_about_the_size_said():
    """README's first command: "downloads CIFAR-10, about N MB"."""
    from mosaicist.sources.download import DATASETS

    said = int(re.search(r"downloads CIFAR-10, about (\d+) MB", readme()).group(1))
    assert abs(DATASETS["cifar10"].size / 1e6 - said) <= 0.05 * said


# -- docs/architecture.md ----------------------------------------------------------------

ARCHITECTURE = ROOT / "docs" / "architecture.md"


def module_table() -> list[tuple[list[str], str]]:
    """The reading-order table: the names in each row's first column, and its second."""
    section = ARCHITECTURE.read_text().split("## Reading order", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = line.strip("|").split(" | ")
        if line.startswith("| `") and len(cells) == 2:
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1]))
    return rows


def test_the_module_table_names_every_module_once():
    """docs/architecture.md, Reading order: every module and package of src/mosaicist."""
    named = [name for names, _ in module_table() for name in names]
    present = [f"{path.name}/" if path.is_dir() else path.name
                     for path in PACKAGE.iterdir()
                     if path.name not in ("__init__.py", "__pycache__")
                     and (path.suffix == ".py" or (path / "__init__.py").exists())]
    assert len(named) == len(set(named)), "a module named twice"
    assert set(present) - set(named) == set(), "modules the table leaves out"
    assert set(named) - set(present) == set(), "names in the table that are no module"


def test_the_module_table_names_each_packages_modules():
    """docs/architecture.md: the private modules a package's row names are its modules."""
    for names, description in module_table():
        for package in (name for name in names if name.endswith("/") and name != "sources/"):
            modules = {path.stem for path in (PACKAGE / package).glob("_*.py")} - {"__init__"}
            named = {name.removesuffix(".py")
                     for name in re.findall(r"`(_[a-z_]+(?:\.py)?)`", description)}
            assert named == modules, package


def test_the_built_in_backends_are_the_registries():
    """docs/architecture.md, Registries: "Built-ins: `exact`, ..." and the formats."""
    from mosaicist.match import MATCHERS
    from mosaicist.render import OUTPUT_FORMATS

    text = ARCHITECTURE.read_text()
    matchers = re.search(r"Built-ins: ((?:`[\w-]+`,?\s*)+)", text).group(1)
    assert re.findall(r"`([\w-]+)`", matchers) == list(MATCHERS)
    formats = re.search(r"Built-ins: (PNG, [^(]+) \(", text).group(1)
    written = {name.strip().lower() for name in formats.replace(",", " ").split()
               if name.strip()}
    assert written == {"png", "jpeg", "webp", "tiff"}
    assert {entry.name.lower() for entry in OUTPUT_FORMATS.values()} == written | {"deep zoom"}
