"""The ``mosaicist`` command line."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .errors import MosaicistError
from .grid import check_sizes
from .progress import progress_enabled


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"mosaicist: error: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns expected failures into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except MosaicistError as error:
            _fail(str(error))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory; try a smaller --limit or target")
        except OSError as error:
            where = f"{error.filename}: " if getattr(error, "filename", None) else ""
            _fail(f"{where}{error.strerror or error}")
        return None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mosaicist")
def main() -> None:
    """Make photomosaics: each cell of a target picture becomes a small photo.

    \b
    Examples:
      mosaicist make bear.jpg                       # CIFAR-10 tiles, 16 px cells
      mosaicist make bear.jpg --tiles ~/Photos -o bear-mosaic.jpg
      mosaicist index ~/Photos --tile-px 64         # index (or update) a folder
      mosaicist score bear-mosaic.png bear.jpg      # how faithful is the mosaic?
    """


def _output_options(command):
    """Options shared by commands that write a picture: quality and Deep Zoom settings."""
    options = [
        click.option("--quality", type=click.IntRange(1, 100), default=None,
                     help="JPEG/WebP quality, also of Deep Zoom tiles [default: 92; 90 for "
                          "Deep Zoom]."),
        click.option("--dzi-tile-size", type=int, default=254, show_default=True,
                     help="Deep Zoom tile side, without overlap."),
        click.option("--dzi-overlap", type=int, default=1, show_default=True,
                     help="Pixels each Deep Zoom tile shares with its neighbours."),
        click.option("--dzi-format", type=click.Choice(["jpeg", "png", "webp"]),
                     default="jpeg", show_default=True, help="Deep Zoom tile format."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _view_hint(output: Path) -> None:
    if output.suffix.lower() == ".dzi":
        click.echo(f"mosaicist: explore it with: mosaicist view {output}", err=True)


def _deep_zoom_settings(tile_size: int, overlap: int, tile_format: str) -> dict:
    return {"tile_size": tile_size, "overlap": overlap, "format": tile_format}


_OUTPUT_HELP = (
    "Output: an image (.png, .jpg, .webp, .tif: tiled pyramidal BigTIFF) written in "
    "streamed bands, or NAME.dzi: a Deep Zoom pyramid (NAME_files/) plus NAME.html, a "
    "zoomable viewer ('mosaicist view NAME.dzi')."
)

_CACHE_HELP = (
    "Cache folder for indexes and downloads [default: $MOSAICIST_CACHE_DIR or user cache]."
)


@main.command(
    epilog="""\b
Examples:
  mosaicist make starry_night.jpg
  mosaicist make starry_night.jpg --tiles cifar10 --cell 8 -o night.png
  mosaicist make bear.jpg --tiles ./photos --tile-px 64 -o bear.jpg \\
      --placements bear.csv --report bear.json
  mosaicist make bear.jpg --tiles galaxy10 --limit 5000
  mosaicist make bear.jpg --tiles ~/Photos --cell 4 --tile-px 256 -o mural.dzi
  mosaicist view mural.dzi
"""
)
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--tiles", "source", default="cifar10", show_default=True,
              help="Tile source: a folder, cifar10, cifar100, cifar10:PATH, galaxy10, "
                   "galaxy10-sdss, or FILE.h5[:KEY] / FILE.npz / FILE.npy.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help=_OUTPUT_HELP + " [default: <target stem>-mosaic.png]")
@click.option("--cell", "cell_px", type=int, default=16, show_default=True,
              help="Target pixels per cell side.")
@click.option("--tile-px", type=int, default=32, show_default=True,
              help="Output pixels per tile side (up to 1024; large outputs are streamed).")
@click.option("--match-px", type=int, default=None,
              help="Side at which tiles are indexed and compared [default: --tile-px up to 64, "
                   "else 32]; larger outputs are drawn from the original images.")
@click.option("--limit", type=int, default=None,
              help="Use only the first N tiles in library order.")
@click.option("--placements", "placements_path", type=click.Path(path_type=Path), default=None,
              help="Write the placements: .csv (row,col,tile,distance,position,transform,"
                   "tint_0..2) or .json (the same plus what 'mosaicist render' needs).")
@click.option("--report", "report_path", type=click.Path(path_type=Path), default=None,
              help="Write a JSON report (grid, tiles, objective, timings).")
@click.option("--metric", type=click.Choice(["seed", "lab", "oklab"]), default="seed",
              show_default=True,
              help="Per-pixel distance: sRGB (the seed's), CIE Lab or Oklab.")
@click.option("--augment", type=click.Choice(["none", "flips", "rotations", "all"]),
              default="none", show_default=True,
              help="Mirror and 90-degree variants of each tile join the candidates.")
@click.option("--tint", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Move each tile's mean colour toward its cell's by this fraction "
                   "(tiles are ranked after the shift).")
@click.option("--overlay", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Blend the target over the mosaic with this weight (a visible cheat, "
                   "reported as such).")
@click.option("--max-uses", type=int, default=None,
              help="Use no tile more than K times (solved as a global assignment).")
@click.option("--min-spacing", type=int, default=1, show_default=True,
              help="Cells holding the same tile are at least D cells apart (Chebyshev).")
@click.option("--assign", "assign_method", type=click.Choice(["optimal", "greedy"]),
              default="optimal", show_default=True,
              help="How --max-uses/--min-spacing are solved.")
@click.option("--search", type=click.Choice(["exact", "approximate"]), default="exact",
              show_default=True,
              help="exact: the true minimum for every cell; approximate: an inverted-file "
                   "index with exact re-ranking, for very large libraries.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda: exact integer search on an NVIDIA GPU (needs the gpu extra).")
@_output_options
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help=_CACHE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, warnings or summary.")
def make(
    target: Path,
    source: str,
    output: Path | None,
    cell_px: int,
    tile_px: int,
    match_px: int | None,
    limit: int | None,
    placements_path: Path | None,
    report_path: Path | None,
    metric: str,
    augment: str,
    tint: float,
    overlay: float,
    max_uses: int | None,
    min_spacing: int,
    assign_method: str,
    search: str,
    device: str,
    quality: int | None,
    dzi_tile_size: int,
    dzi_overlap: int,
    dzi_format: str,
    cache_dir: Path | None,
    quiet: bool,
) -> None:
    """Make a photomosaic of TARGET (the seed's exact pixel match)."""
    from .imaging import target_size
    from .mosaic import default_match_px, make_mosaic
    from .render import check_output, check_writable, source_root

    started = time.perf_counter()
    check_sizes(cell_px, tile_px)
    if match_px is not None:
        check_sizes(cell_px, match_px)
    if limit is not None and limit < 1:
        raise MosaicistError(f"--limit must be at least 1, got {limit}")
    if output is None:
        output = Path(f"{target.stem}-mosaic.png")
    for path, what in ((placements_path, "placements file"), (report_path, "report file")):
        if path is not None:
            check_writable(path, what)
    # The output's size is known from the target's header: refuse it before any work.
    width, height = target_size(target)
    deep_zoom = _deep_zoom_settings(dzi_tile_size, dzi_overlap, dzi_format)
    check_output(output, width // cell_px * tile_px, height // cell_px * tile_px, deep_zoom)

    show = progress_enabled(quiet)
    mosaic = make_mosaic(
        target, source, cell_px=cell_px, tile_px=tile_px,
        match_px=match_px or default_match_px(tile_px), limit=limit,
        metric=metric, augment=augment, tint=tint, overlay=overlay, max_uses=max_uses,
        min_spacing=min_spacing, assign=assign_method, search=search, device=device,
        cache_dir=cache_dir, show_progress=show, quiet=quiet,
    )
    width, height = mosaic.renderer.width, mosaic.renderer.height
    write_started = time.perf_counter()
    mosaic.renderer.write(output, quality=quality, deep_zoom=deep_zoom,
                          source_root=source_root(mosaic.library.source), show_progress=show)
    if placements_path is not None:
        mosaic.placements.write(placements_path)
    mosaic.timings["render"] += time.perf_counter() - write_started
    mosaic.timings["total"] = time.perf_counter() - started
    if report_path is not None:
        mosaic.write_report(report_path, output=str(output), target=str(target))
    if not quiet:
        stats = mosaic.library.stats
        skipped = f" ({len(stats.failed)} skipped)" if stats and stats.failed else ""
        timings = mosaic.timings
        quality = ""
        if mosaic.metrics:
            from .quality import headline

            quality = f"; {headline(mosaic.metrics)}"
            if tint or overlay:
                quality += f", tint {tint:g}, overlay {overlay:g}"
        click.echo(
            f"mosaicist: {mosaic.grid.rows}x{mosaic.grid.cols} cells, "
            f"{len(mosaic.library)} tiles{skipped}; index {timings['index']:.2f} s, "
            f"match {timings['match']:.2f} s, render {timings['render']:.2f} s, "
            f"total {timings['total']:.2f} s -> {output} ({width}x{height}){quality}",
            err=True,
        )
        _view_hint(output)


@main.command(
    epilog="""\b
Examples:
  mosaicist make bear.jpg --placements bear.json -o bear.png
  mosaicist render bear.json -o bear-print.tif --tile-px 128
  mosaicist render bear.csv --tiles ~/Photos -o bear.jpg
  mosaicist render bear.json -o mural.dzi --tile-px 512
"""
)
@click.argument("placements_path", metavar="PLACEMENTS", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help=_OUTPUT_HELP)
@click.option("--tile-px", type=int, default=None,
              help="Output pixels per tile side [default: the size matched at].")
@click.option("--tiles", "source", default=None,
              help="Tile source (needed for CSV placements, which do not record it).")
@_output_options
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help=_CACHE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or summary.")
def render(
    placements_path: Path,
    output: Path,
    tile_px: int | None,
    source: str | None,
    quality: int | None,
    dzi_tile_size: int,
    dzi_overlap: int,
    dzi_format: str,
    cache_dir: Path | None,
    quiet: bool,
) -> None:
    """Render saved PLACEMENTS (.json or .csv) again, without matching.

    Tiles are made from the library's original images at --tile-px, with the
    recorded transforms, tint and overlay; the picture is streamed, so any
    size fits in bounded memory.
    """
    from .placements import Placements
    from .render import check_output, placement_renderer, source_root

    started = time.perf_counter()
    placements = Placements.read(placements_path)
    size = tile_px or int(placements.metadata.get("tile_px") or 32)
    check_sizes(1, size)
    deep_zoom = _deep_zoom_settings(dzi_tile_size, dzi_overlap, dzi_format)
    check_output(output, placements.cols * size, placements.rows * size, deep_zoom)
    show = progress_enabled(quiet)
    renderer, tile_source = placement_renderer(placements, size, source, cache_dir=cache_dir,
                                               show_progress=show)
    renderer.write(output, quality=quality, deep_zoom=deep_zoom,
                   source_root=source_root(tile_source), show_progress=show)
    if not quiet:
        seconds = time.perf_counter() - started
        click.echo(
            f"mosaicist: {placements.rows}x{placements.cols} cells at {size} px rendered in "
            f"{seconds:.2f} s -> {output} ({renderer.width}x{renderer.height})",
            err=True,
        )
        _view_hint(output)


@main.command(
    epilog="""\b
Examples:
  mosaicist view mural.dzi
  mosaicist view mural.html --no-browser --port 8000
"""
)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--no-browser", is_flag=True, help="Only serve; do not open a browser.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0: a free one).")
def view(path: Path, no_browser: bool, port: int) -> None:
    """Serve a Deep Zoom mosaic's viewer on localhost and open it in the browser.

    PATH is NAME.dzi, NAME.html or their folder. Stop with Ctrl+C.
    """
    from .viewer import serve_viewer

    serve_viewer(path, open_browser=not no_browser, port=port,
                 announce=lambda message: click.echo(message, err=True))


@main.command(
    epilog="""\b
Examples:
  mosaicist index ~/Photos
  mosaicist index ~/Photos --tile-px 64
  mosaicist index cifar100
"""
)
@click.argument("source")
@click.option("--tile-px", type=int, default=32, show_default=True,
              help="Side of the indexed tiles in pixels.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help=_CACHE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, warnings or summary.")
def index(source: str, tile_px: int, cache_dir: Path | None, quiet: bool) -> None:
    """Index SOURCE (or bring its index up to date) without making a mosaic.

    Only new or changed files are decoded; removed ones drop out. An
    interrupted run keeps what it indexed and the next run resumes.
    """
    from .library import TileLibrary

    check_sizes(1, tile_px)
    library = TileLibrary.open(
        source, tile_px, cache_dir=cache_dir, show_progress=progress_enabled(quiet), quiet=quiet
    )
    stats = library.stats
    if not quiet and stats is not None:
        click.echo(
            f"mosaicist: {len(library)} tiles of {tile_px} px from {library.source.name}: "
            f"{stats.decoded} decoded, {stats.reused} unchanged, {stats.removed} removed, "
            f"{len(stats.failed)} skipped in {stats.seconds:.2f} s; index at {library.directory}",
            err=True,
        )


@main.command(
    epilog="""\b
Examples:
  mosaicist score bear-mosaic.png bear.jpg
  mosaicist score night.png starry_night.jpg --cell 8 --json night-score.json
  mosaicist score bear-mosaic.jpg bear.jpg --placements bear.csv --view-px 8

\b
Metrics (see mosaicist.quality):
  psnr_full            PSNR (dB) against the target scaled to the mosaic's size
  psnr_view            PSNR (dB) with every cell reduced to VIEW_PX pixels
  ssim_view            SSIM of the luma at that viewing scale
  ciede2000_*_view     CIEDE2000 colour difference (mean, 95th percentile)
  distinct_tiles, max_uses, closest_repeat   with --placements
PSNR is capped at 100 dB (identical images).
"""
)
@click.argument("mosaic", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--cell", "cell_px", type=int, default=16, show_default=True,
              help="Target pixels per cell side the mosaic was made with.")
@click.option("--view-px", type=int, default=4, show_default=True,
              help="Pixels per cell side at viewing scale.")
@click.option("--placements", "placements_path", type=click.Path(path_type=Path), default=None,
              help="Placements (.csv or .json) from 'make --placements': adds tile "
                   "repetition metrics.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write the metrics as JSON.")
def score(
    mosaic: Path,
    target: Path,
    cell_px: int,
    view_px: int,
    placements_path: Path | None,
    json_path: Path | None,
) -> None:
    """Measure how faithfully MOSAIC reproduces TARGET (any tool's mosaic).

    The target is cut into cells of --cell pixels as 'make' does (centre
    crop); MOSAIC must be a whole number of tile pixels per cell.
    """
    import json

    from .paths import atomic_path
    from .quality import headline, read_tile_grid, score_mosaic
    from .render import check_writable

    if json_path is not None:
        check_writable(json_path, "JSON file")
    tile_grid = None if placements_path is None else read_tile_grid(placements_path)
    metrics = score_mosaic(mosaic, target, cell_px, view_px=view_px, tile_grid=tile_grid)
    width = max(len(key) for key in metrics)
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        click.echo(f"{key:<{width}}  {shown}")
    click.echo(f"mosaicist: {headline(metrics)}", err=True)
    if json_path is not None:
        with atomic_path(json_path) as temporary:
            temporary.write_text(json.dumps(metrics, indent=2) + "\n")
