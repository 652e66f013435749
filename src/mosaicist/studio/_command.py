"""The command line that repeats a studio run from a terminal.

The studio and ``mosaicist make`` build the same :class:`~mosaicist.options.MosaicOptions`
from the settings that were *given* (the others follow the preset): a run
is written as ``mosaicist make`` with a flag for each given setting, and
nothing else, so that the command resolves to the same options (the fitted
preset wishes included). :func:`command_line` checks this before it answers.
"""

from __future__ import annotations

import shlex
from typing import Any

from ..errors import OptionError
from ..options import MosaicOptions, settings

#: Settings whose flag takes its value joined with ``=`` (their value is optional).
_JOINED = frozenset({"dedupe"})


def given_settings(options: MosaicOptions) -> dict[str, Any]:
    """The settings of ``options`` that were given, by name: ``MosaicOptions(**them) == options``.

    Parameters
    ----------
    options : MosaicOptions
        Settings, as the studio built them from what the user changed.

    Returns
    -------
    dict
        Name -> value of each given setting, in declaration order.
    """
    return {declared.name: getattr(options, declared.name) for declared in settings()
            if options.given(declared.name)}


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError("no flag takes a true/false value")
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def setting_arguments(options: MosaicOptions) -> list[str]:
    """The ``make`` flags (and values) that give exactly the settings of ``options``.

    Raises
    ------
    OptionError
        Naming a given setting the command line cannot express (a setting
        without a flag, or "no limit" where the preset sets one).
    """
    arguments: list[str] = []
    expressible: dict[str, Any] = {}
    for declared in settings():
        name = declared.name
        if not options.given(name):
            continue
        value = getattr(options, name)
        if value is None:
            if declared.flag is not None and declared.optional:
                # Given as "no value" (no limit, over the preset's): `--max-uses none`.
                expressible[name] = None
                arguments += [declared.flag, "none"]
            continue
        if declared.flag is None:
            raise OptionError("{" + name + "} has no command-line flag; leave it as it is "
                              "to get a command that repeats this mosaic")
        expressible[name] = value
        if name in _JOINED:
            arguments.append(f"{declared.flag}={_flag_value(value)}")
        else:
            arguments += [declared.flag, _flag_value(value)]
    rebuilt = MosaicOptions(**expressible)
    if rebuilt != options:
        differing = next(declared.name for declared in settings()
                         if getattr(rebuilt, declared.name) != getattr(options, declared.name))
        raise OptionError(
            "{" + differing + "} {value} cannot be written as a 'mosaicist make' flag with "
            "{preset} {preset_value}; choose a value or the seed preset",
            value="none" if getattr(options, differing) is None else getattr(options, differing),
            preset_value=options.preset)
    return arguments


def command_line(target: str, tiles: str, options: MosaicOptions,
                 output: str = "mosaic.png") -> str:
    """The ``mosaicist make`` command with exactly the given settings, shell-quoted.

    Parameters
    ----------
    target : str
        The target picture's path as the user will type it.
    tiles : str
        The tile source spec.
    options : MosaicOptions
        The run's settings; only those given are written (the rest follow
        the preset, as they do for the studio).
    output : str
        The output file.

    Returns
    -------
    str
        E.g. ``mosaicist make photo.jpg --tiles cifar10 --tint 0.5 -o mosaic.png``.

    Raises
    ------
    OptionError
        When a given setting cannot be written on the command line.

    Examples
    --------
    >>> command_line("my photo.jpg", "cifar10", MosaicOptions(max_uses=2))
    "mosaicist make 'my photo.jpg' --tiles cifar10 --max-uses 2 -o mosaic.png"
    """
    words = ["mosaicist", "make", _argument(target), "--tiles", _argument(tiles),
             *setting_arguments(options), "-o", output]
    return shlex.join(words)


def render_command_line(placements: str, tile_px: int, output: str = "mosaic.png") -> str:
    """The ``mosaicist render`` command that redraws saved placements at ``tile_px``.

    Examples
    --------
    >>> render_command_line("placements.json", 128)
    'mosaicist render placements.json --tile-px 128 -o mosaic.png'
    """
    return shlex.join(["mosaicist", "render", _argument(placements), "--tile-px", str(tile_px),
                       "-o", output])


def _argument(path: str) -> str:
    # A name starting with "-" would read as a flag; "./" keeps it a path.
    return f"./{path}" if path.startswith("-") else path
