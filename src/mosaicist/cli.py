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
    """


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
"""
)
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--tiles", "source", default="cifar10", show_default=True,
              help="Tile source: a folder, cifar10, cifar100, cifar10:PATH, galaxy10, "
                   "galaxy10-sdss, or FILE.h5[:KEY] / FILE.npz / FILE.npy.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output image (.png, .jpg, .webp, .tif) [default: <target stem>-mosaic.png].")
@click.option("--cell", "cell_px", type=int, default=16, show_default=True,
              help="Target pixels per cell side.")
@click.option("--tile-px", type=int, default=32, show_default=True,
              help="Output pixels per tile side.")
@click.option("--limit", type=int, default=None,
              help="Use only the first N tiles in library order.")
@click.option("--placements", "placements_path", type=click.Path(path_type=Path), default=None,
              help="Write the placements as CSV (row,col,tile,distance,position).")
@click.option("--report", "report_path", type=click.Path(path_type=Path), default=None,
              help="Write a JSON report (grid, tiles, objective, timings).")
@click.option("--search", type=click.Choice(["exact", "approximate"]), default="exact",
              show_default=True,
              help="exact: the true minimum for every cell; approximate: an inverted-file "
                   "index with exact re-ranking, for very large libraries.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda: exact integer search on an NVIDIA GPU (needs the gpu extra).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help=_CACHE_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, warnings or summary.")
def make(
    target: Path,
    source: str,
    output: Path | None,
    cell_px: int,
    tile_px: int,
    limit: int | None,
    placements_path: Path | None,
    report_path: Path | None,
    search: str,
    device: str,
    cache_dir: Path | None,
    quiet: bool,
) -> None:
    """Make a photomosaic of TARGET (the seed's exact pixel match)."""
    from .mosaic import make_mosaic
    from .render import check_output_size, check_writable, output_format, save_image

    started = time.perf_counter()
    check_sizes(cell_px, tile_px)
    if limit is not None and limit < 1:
        raise MosaicistError(f"--limit must be at least 1, got {limit}")
    if output is None:
        output = Path(f"{target.stem}-mosaic.png")
    output_format(output)
    check_writable(output)
    for path, what in ((placements_path, "placements file"), (report_path, "report file")):
        if path is not None:
            check_writable(path, what)
    if not target.exists():
        raise MosaicistError(f"{target}: target file not found")

    show = progress_enabled(quiet)
    mosaic = make_mosaic(
        target, source, cell_px=cell_px, tile_px=tile_px, limit=limit,
        search=search, device=device, cache_dir=cache_dir, show_progress=show, quiet=quiet,
    )
    height, width = mosaic.image.shape[:2]
    check_output_size(output, width, height)
    write_started = time.perf_counter()
    save_image(mosaic.image, output)
    if placements_path is not None:
        mosaic.placements.write_csv(placements_path)
    mosaic.timings["render"] += time.perf_counter() - write_started
    mosaic.timings["total"] = time.perf_counter() - started
    if report_path is not None:
        mosaic.write_report(report_path, output=str(output), target=str(target))
    if not quiet:
        stats = mosaic.library.stats
        skipped = f" ({len(stats.failed)} skipped)" if stats and stats.failed else ""
        timings = mosaic.timings
        click.echo(
            f"mosaicist: {mosaic.grid.rows}x{mosaic.grid.cols} cells, "
            f"{len(mosaic.library)} tiles{skipped}; index {timings['index']:.2f} s, "
            f"match {timings['match']:.2f} s, render {timings['render']:.2f} s, "
            f"total {timings['total']:.2f} s -> {output} ({width}x{height})",
            err=True,
        )


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
