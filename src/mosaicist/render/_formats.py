"""Output formats: one table from file suffix to the writer that makes the file.

Every picture mosaicist writes (a PNG, a pyramidal TIFF, a Deep Zoom
pyramid...) comes as a :class:`Picture`: horizontal bands, top to bottom, of
a known size, plus the placements it was drawn from. An :class:`OutputFormat`
checks, before any work, that a path can take a picture of that size, and
writes it, streaming, atomically, with the output settings of a
:class:`~mosaicist.options.MosaicOptions` (quality, Deep Zoom layout, and
``dpi``, the resolution that image formats record for printing and that
formats without one, such as Deep Zoom, ignore). The formats live in one
registry, :data:`OUTPUT_FORMATS`, keyed by suffix; :func:`register_format` adds one
(see ``docs/architecture.md``).
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._registry import PluginError, Registry, check_name, describe, guard_plugin
from .._runtime import byte_words, check_memory
from ..errors import MosaicistError, OptionError, alternatives
from ..paths import check_writable, refuses_files
from ..sources.base import readable

if TYPE_CHECKING:
    from ..options import MosaicOptions
    from ..placements import Placements


@dataclass
class Picture:
    """A picture to write, as bands, and what a viewer may show of it.

    Attributes
    ----------
    bands : iterable of numpy.ndarray
        ``(h, width, 3)`` uint8 bands, top to bottom, of any heights summing
        to ``height``; each is used once.
    width, height : int
        Size of the picture.
    placements : Placements, optional
        The placements it was drawn from (a Deep Zoom viewer labels cells
        with their photos).
    source_root : pathlib.Path, optional
        Folder of the tiles' original files, when they are local files.
    """

    bands: Iterable[np.ndarray]
    width: int
    height: int
    placements: Placements | None = None
    source_root: Path | None = None


class OutputFormat(abc.ABC):
    """A kind of file a picture can be written to.

    Attributes
    ----------
    name : str
        Name shown in messages (``"PNG"``).
    suffixes : tuple of str
        Lower-case file suffixes, with the dot, that select this format.
    """

    name: str
    suffixes: tuple[str, ...]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # What a plugin's methods return is checked where a wrong value would go unnoticed.
        guard_plugin(cls, "output format", _PLUGIN_CHECKS)

    def check(self, path: Path, width: int, height: int, options: MosaicOptions) -> None:
        """Raise :class:`MosaicistError` when ``path`` cannot take a ``width x height`` picture.

        Called before any work; the default accepts every size.

        Parameters
        ----------
        path : pathlib.Path
            The output file, named in the message.
        width, height : int
            The picture's size in pixels.
        options : MosaicOptions
            The settings it will be written with (a format may limit some).

        Raises
        ------
        MosaicistError
            With a one-line message naming ``path``.
        """
        return None

    def reads(self, options: MosaicOptions) -> frozenset[str] | None:
        """The output settings (section ``output`` of :class:`MosaicOptions`) it writes with.

        A command notes the others given as having no effect
        (:func:`ignored_settings`); None, the default, means not known (a
        plugin's format), and nothing is noted.

        Parameters
        ----------
        options : MosaicOptions
            The settings of the run: what is read may depend on them.

        Returns
        -------
        frozenset of str or None
            The names of the settings read.
        """
        return None

    def least_room(self, width: int, height: int, options: MosaicOptions) -> tuple[int, int]:
        """The fewest bytes and files a ``width x height`` picture can take in this format.

        A lower bound, so that :func:`check_output` refuses only outputs that
        cannot fit whatever the pictures hold: the default is one file of the
        pixels at deflate's best ratio (:data:`LEAST_BYTES_PER_PIXEL`, a
        picture of one colour); a format of many files says so.

        Parameters
        ----------
        width, height : int
            The picture's size in pixels.
        options : MosaicOptions
            The settings it will be written with.

        Returns
        -------
        tuple of int
            ``(bytes, files)``, both lower bounds.
        """
        return math.ceil(width * height * LEAST_BYTES_PER_PIXEL), 1

    def companions(self, path: Path) -> tuple[tuple[Path, str], ...]:
        """The other files or folders writing ``path`` makes, each with what it is.

        A command checks that none of them is one of its other files; the
        default is none.

        Parameters
        ----------
        path : pathlib.Path
            The output file.

        Returns
        -------
        tuple of (pathlib.Path, str)
            Each other path, with a few words on what it holds.
        """
        return ()

    @abc.abstractmethod
    def write(
        self, path: Path, picture: Picture, options: MosaicOptions, show_progress: bool = False
    ) -> None:
        """Write ``picture`` to ``path``, streaming and atomically.

        Nothing may appear under ``path`` (or the other names the format
        writes) unless the whole picture was written.

        Parameters
        ----------
        path : pathlib.Path
            The output file.
        picture : Picture
            What to write: its size and its bands of rows.
        options : MosaicOptions
            The output settings to write with.
        show_progress : bool
            Draw a progress bar.
        """

    def __repr__(self) -> str:
        return f"<output format {self.name} {' '.join(self.suffixes)}>"


def _broken(output: OutputFormat, problem: str) -> PluginError:
    return PluginError(f"{describe('output format', output)} is broken: {problem}")


def _checked_reads(output: OutputFormat, returned: object, args: tuple[Any, ...]) -> Any:
    if returned is None:
        return None
    if not isinstance(returned, set | frozenset) or not all(
            isinstance(name, str) for name in returned):
        raise _broken(output, f"reads() returned {returned!r}, not a set of setting names "
                              "or None")
    return frozenset(returned)


def _checked_room(output: OutputFormat, returned: object, args: tuple[Any, ...]) -> Any:
    if not (isinstance(returned, tuple) and len(returned) == 2 and all(
            isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0
            for value in returned)):
        raise _broken(output, f"least_room() returned {returned!r}, not (bytes, files) as "
                              "two whole numbers")
    return int(returned[0]), int(returned[1])


def _checked_companions(output: OutputFormat, returned: object, args: tuple[Any, ...]) -> Any:
    if not isinstance(returned, tuple | list) or not all(
            isinstance(item, tuple | list) and len(item) == 2
            and isinstance(item[0], str | os.PathLike) and isinstance(item[1], str)
            for item in returned):
        raise _broken(output, f"companions() returned {returned!r}, not pairs of a path and "
                              "what it is")
    return tuple((Path(path), what) for path, what in returned)


#: What a plugin's methods must return, checked after each call (None: not checked).
_PLUGIN_CHECKS: dict[str, Any] = {
    "check": None, "write": None, "reads": _checked_reads, "least_room": _checked_room,
    "companions": _checked_companions,
}

#: The fewest bytes a pixel of any picture takes in these formats: deflate stores at most
#: 1,032 bytes of a run of one value in a byte (a picture of one colour, RGB).
LEAST_BYTES_PER_PIXEL = 3 / 1032

#: Pixels from which an output too large for its disk is told to use fewer pixels too.
LARGE_OUTPUT_PIXELS = 10_000_000
#: Copies of a band (one row of tiles across the picture) a writer holds at once: the
#: band drawn, the one being encoded and the encoder's blocks (2.05 measured for PNG, 2.4
#: JPEG, 3.3 Deep Zoom, 3.9 TIFF: rounded down to the least).
BAND_COPIES = 2
#: Bytes per pixel of a format encoded whole, in memory (a ``max_pixels`` limit says so):
#: WebP's Pillow copy, libwebp's ARGB and YUV copies.
WHOLE_BYTES_PER_PIXEL = 11

#: Output formats by lower-case file suffix (``.png``, ``.dzi``...).
OUTPUT_FORMATS: Registry[OutputFormat] = Registry("output format")


def register_format(output: OutputFormat, *, replace: bool = False) -> OutputFormat:
    """Add ``output`` to :data:`OUTPUT_FORMATS` under each of its suffixes.

    Parameters
    ----------
    output : OutputFormat
        The format.
    replace : bool
        Allow taking over a suffix another format has.

    Returns
    -------
    OutputFormat
        ``output``, so that this can decorate an instance's creation.
    """
    if isinstance(output, type):
        raise TypeError(f"register_format takes a format, not its class: use "
                        f"{output.__qualname__}()")
    if not isinstance(output, OutputFormat):
        raise TypeError(f"register_format takes an OutputFormat, got {type(output).__name__}")
    suffixes = getattr(output, "suffixes", None)
    if isinstance(suffixes, str) or not isinstance(suffixes, tuple | list) or not suffixes:
        raise ValueError(f"{describe('output format', output)} needs suffixes, a tuple such "
                         f"as ('.pgm',), got {suffixes!r}")
    for suffix in output.suffixes:
        # A path's suffix is what follows its last dot: '.tar.gz' would never be chosen.
        if (not isinstance(suffix, str) or suffix != suffix.lower()
                or not suffix.startswith(".") or suffix.count(".") != 1 or len(suffix) < 2):
            raise ValueError(f"suffixes are lower case, start with their only dot and name "
                             f"something, got {suffix!r}")
        check_name(suffix, f"a suffix of {describe('output format', output)}")
    for suffix in output.suffixes:
        OUTPUT_FORMATS.register(suffix, output, replace=replace)
    return output


def output_format(path: str | os.PathLike[str]) -> OutputFormat:
    """Return the format that ``path``'s suffix names.

    Parameters
    ----------
    path : str or path-like
        The output file; only its suffix counts, in any case.

    Returns
    -------
    OutputFormat
        The registered format for that suffix.

    Raises
    ------
    MosaicistError
        For a suffix no format has.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        known = alternatives(sorted(OUTPUT_FORMATS))
        if not suffix:
            # "unknown output format '(none)'" said nothing of why: a folder given for a
            # file, or a name without its extension.
            what = "is a folder" if os.path.isdir(path) else "has no extension"
            raise MosaicistError(f"{path}: the output {what}; name a file ending in one of "
                                 f"{known}")
        # Its bytes that are not UTF-8 shown as the path's are (\xff), not as surrogates.
        raise MosaicistError(f"{path}: unknown output format '{readable(suffix)}'; use {known}")
    return OUTPUT_FORMATS[suffix]


def check_output(
    path: str | os.PathLike[str], width: int, height: int, options: MosaicOptions | None = None
) -> OutputFormat:
    """Check, before any work, that ``path`` can take a ``width x height`` picture.

    The format must be known, the folder writable, the size and settings
    within what the format can hold, the file within the free disk space
    (:func:`check_room`) and its writing within the memory available
    (:func:`check_output_memory`).

    Parameters
    ----------
    path : str or path-like
        The output file; its suffix names the format.
    width, height : int
        The picture's size in pixels.
    options : MosaicOptions, optional
        The settings it will be written with (default: the defaults).

    Returns
    -------
    OutputFormat
        The format that will write it.

    Raises
    ------
    MosaicistError
        With a one-line message naming ``path``.
    """
    from ..options import MosaicOptions

    output = output_format(path)
    check_writable(path)
    options = options or MosaicOptions()
    output.check(Path(path), width, height, options)
    check_room(path, output, width, height, options)
    check_output_memory(path, output, width, height, options)
    return output


def ignored_settings(output: OutputFormat, options: MosaicOptions) -> list[str]:
    """The output settings given in ``options`` that writing ``output`` does not use.

    ``dpi`` with a print size sizes the print, so it is used whatever the file.

    Parameters
    ----------
    output : OutputFormat
        The format that will write.
    options : MosaicOptions
        The settings of the run; only those given explicitly count.

    Returns
    -------
    list of str
        The names of the settings with no effect, in declaration order
        (empty when the format does not say what it reads).
    """
    from ..options import settings

    reads = output.reads(options)
    if reads is None:
        return []
    used = reads | ({"dpi"} if options.print_size is not None else set())
    return [declared.name for declared in settings()
            if declared.section == "output" and options.given(declared.name)
            and declared.name not in used]


def check_room(path: str | os.PathLike[str], output: OutputFormat, width: int, height: int,
               options: MosaicOptions) -> None:
    """Refuse an output that cannot fit the free space of its file system.

    What the format needs at the least (:meth:`OutputFormat.least_room`,
    each file taking at least one block) is compared with the space and
    the files (inodes) left to unprivileged users. A plan gone wrong (1 px
    cells and large tiles: terapixels) is refused at once, not after hours
    of work and a full disk. Where the file system cannot say, nothing is
    refused. An output already there (or a companion of it, such as a Deep
    Zoom pyramid's tiles) keeps its room until the new one is complete,
    written beside it: that room is not free, and a refusal says so.

    Parameters
    ----------
    path : str or path-like
        The output file; the space of its folder's file system counts.
    output : OutputFormat
        The format that will write it.
    width, height : int
        The picture's size in pixels.
    options : MosaicOptions
        The settings it will be written with.

    Raises
    ------
    MosaicistError
        With a one-line message naming ``path``, what it needs and what is free.
    """
    needed, files = output.least_room(width, height, options)
    folder = Path(path).absolute().parent
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # a folder made later, or no statvfs (Windows)
        return
    block = stats.f_frsize or stats.f_bsize or 1
    # Every file takes at least one block, however small its content.
    needed += files * block
    free = stats.f_bavail * block
    pixels = width * height
    amount = (f" ({pixels / 1e12:,.1f} terapixels)" if pixels >= 1e12 else
              f" ({pixels / 1e9:,.1f} gigapixels)" if pixels >= 1e8 else
              f" ({pixels / 1e6:,.1f} megapixels)" if pixels >= 1e5 else "")
    size = f"a {width:,}x{height:,} px {output.name} output{amount}"
    if needed > free:
        # A folder that takes no files (/proc, /sys) also reports 0 bytes free: the
        # problem there is the folder, not a full disk.
        refused = refuses_files(folder)
        if refused:
            raise MosaicistError(f"{path}: files cannot be made in the output folder "
                                 f"{folder} ({refused}); write the output elsewhere")
        if getattr(stats, "f_blocks", None) == 0:
            return  # a file system that reports no size at all cannot say what is free
        # A full disk is the disk's to fix: fewer pixels is advice only for a large picture
        # (a 128x96 px PNG on a full disk was told to use larger cells).
        smaller = ", or use larger cells or smaller tiles" if pixels >= LARGE_OUTPUT_PIXELS else ""
        # An output written again is written beside the old one (a Deep Zoom pyramid's
        # tiles are staged beside the old tiles), which goes only once the new one is
        # complete: its room is not free for the new one, whatever the user expects.
        names = [Path(path), *(companion for companion, _ in output.companions(Path(path)))]
        if any(os.path.lexists(name) for name in names):
            raise MosaicistError(
                f"{path}: {size} needs at least {byte_words(needed)}; its file system has "
                f"{byte_words(free)} free, the output already there keeping its room until "
                "the new one is complete; free some space, delete the old output first or "
                f"write the output elsewhere{smaller}")
        raise MosaicistError(f"{path}: {size} needs at least {byte_words(needed)}; its file system "
                             f"has {byte_words(free)} free; free some space or write the output "
                             f"elsewhere{smaller}")
    if stats.f_files and files > stats.f_favail:
        raise MosaicistError(f"{path}: {size} needs {files:,} files; its file system has room "
                             f"for {stats.f_favail:,} more; use larger cells, smaller tiles "
                             "or larger Deep Zoom tiles")



def output_memory(output: OutputFormat, width: int, height: int, options: MosaicOptions
                  ) -> int:
    """Bytes that writing a ``width x height`` picture in ``output`` holds, at the least.

    Every picture is drawn in bands of one row of tiles (``tile_height`` rows
    across the whole width) and a writer holds :data:`BAND_COPIES` of one; a
    format encoded whole (a ``max_pixels`` limit: WebP) holds the picture too,
    at :data:`WHOLE_BYTES_PER_PIXEL`. A streaming format (PNG, JPEG, TIFF,
    Deep Zoom) needs no more for a taller picture.

    Parameters
    ----------
    output : OutputFormat
        The format that will write it.
    width, height : int
        The picture's size in pixels.
    options : MosaicOptions
        The settings it is drawn with (``tile_px`` and the aspect give the band's height).

    Returns
    -------
    int
        The estimate, in bytes (rounded down where measured: it errs low).
    """
    band = min(options.tile_height, height) * width * 3
    whole = width * height * WHOLE_BYTES_PER_PIXEL if getattr(output, "max_pixels", None) else 0
    return BAND_COPIES * band + whole


def check_output_memory(path: str | os.PathLike[str], output: OutputFormat, width: int,
                        height: int, options: MosaicOptions,
                        available: int | None = None) -> None:
    """Refuse, before any work, an output whose writing cannot fit in the memory available.

    Parameters
    ----------
    path : str or path-like
        The output file, named in the message.
    output : OutputFormat
        The format that will write it.
    width, height : int
        The picture's size in pixels.
    options : MosaicOptions
        The settings it is drawn with.
    available : int, optional
        Bytes available (default: :func:`mosaicist._runtime.available_memory`).

    Raises
    ------
    OptionError
        With a one-line message naming ``path``, what writing it needs and
        what is available, and the setting that makes it smaller.
    """
    needed = output_memory(output, width, height, options)
    whole = bool(getattr(output, "max_pixels", None))
    band_height = min(options.tile_height, height)
    drawn = ("is encoded whole, in memory, which needs" if whole else
             f"is drawn in bands of {width:,}x{band_height:,} px, which need")

    def refusal(needed: str, free: str) -> OptionError:
        return OptionError(
            "{path}: a {width}x{height} px {name} output {drawn} about "
            "{needed} of memory; this machine has {free} available: use a smaller {tile_px}"
            + (" or another format (.png, .jpg, .tif or .dzi stream)" if whole else ""),
            path=str(path), width=f"{width:,}", height=f"{height:,}",
            name=getattr(output, "title", None) or output.name,
            drawn=drawn, needed=needed, free=free)

    check_memory(needed, refusal, available)


def write_output(
    path: str | os.PathLike[str],
    picture: Picture,
    options: MosaicOptions | None = None,
    show_progress: bool = False,
) -> None:
    """Write ``picture`` in the format ``path``'s suffix names (see :func:`check_output`).

    Parameters
    ----------
    path : str or path-like
        The output file; its suffix names the format.
    picture : Picture
        What to write.
    options : MosaicOptions, optional
        The output settings (default: the defaults).
    show_progress : bool
        Draw a progress bar.

    Raises
    ------
    MosaicistError
        For a suffix no format has, a picture the format cannot hold, or
        a writer that made no file; the message names ``path``.
    """
    from ..options import MosaicOptions

    options = options or MosaicOptions()
    output = output_format(path)
    output.check(Path(path), picture.width, picture.height, options)
    # Also here, for a caller that did not check the output first (Mosaic.write).
    check_output_memory(path, output, picture.width, picture.height, options)
    output.write(Path(path), picture, options, show_progress)
    if not os.path.lexists(path):
        # Else the command would name an output that is not there (a plugin's writer).
        raise MosaicistError(f"{path}: the {output.name} writer made no file")
