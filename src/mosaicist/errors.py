"""Errors that are reported to the user as one clear line."""

from __future__ import annotations

import string
from collections.abc import Callable


class MosaicistError(Exception):
    """A problem with the user's input or environment.

    The command line prints ``str(error)`` as one line on stderr and exits
    with a non-zero status, without a traceback.
    """


class SourceError(MosaicistError):
    """A tile source that cannot be resolved or read at all."""


class DownloadError(MosaicistError):
    """A download failed or its checksum did not match."""


class OptionError(MosaicistError, ValueError):
    """A setting whose value mosaicist cannot use; the message names the parameter.

    The message is a template in which every ``{name}`` that is not among
    ``values`` is a parameter: ``str(error)`` shows it as the Python name
    (``max_uses``), and :meth:`message` lets the command line show the flag
    that sets it instead (``--max-uses``). Values are inserted as they are,
    never parsed as template text.

    Parameters
    ----------
    template : str
        E.g. ``"{max_uses} must be at least 1, got {value}"``.
    **values : object
        The non-parameter fields of the template.

    Examples
    --------
    >>> error = OptionError("{max_uses} must be at least 1, got {value}", value=0)
    >>> str(error)
    'max_uses must be at least 1, got 0'
    >>> error.message(lambda name: "--" + name.replace("_", "-"))
    '--max-uses must be at least 1, got 0'
    >>> error.parameters
    ('max_uses',)
    """

    def __init__(self, template: str, **values: object) -> None:
        self.template = template
        self.values = values
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field]
        self.parameters = tuple(dict.fromkeys(f for f in fields if f not in values))
        super().__init__(self.message())

    def message(self, name_of: Callable[[str], str] = str) -> str:
        """Return the message with each parameter shown as ``name_of(parameter)``."""
        names = {parameter: name_of(parameter) for parameter in self.parameters}
        return self.template.format(**names, **self.values)

    def __reduce__(self) -> tuple:
        # Exceptions pickle their args; ours are keyword values (worker processes).
        return (_rebuild_option_error, (self.template, self.values))


def _rebuild_option_error(template: str, values: dict) -> OptionError:
    return OptionError(template, **values)


def check_range(
    parameter: str, value: int | float, low: int | float, high: int | float | None = None,
    unit: str = "",
) -> None:
    """Raise :class:`OptionError` unless ``low <= value <= high`` (no upper limit: None).

    Parameters
    ----------
    parameter : str
        Name of the parameter, shown in the message.
    value : int or float
        Its value.
    low, high : int or float
        Inclusive limits; ``high`` None means no upper limit.
    unit : str
        Unit named after the limits (``"pixels"``).
    """
    unit = f" {unit}" if unit else ""
    if high is None:
        if not value >= low:
            raise OptionError("{" + parameter + "} must be at least {low}" + unit + ", got {value}",
                              low=low, value=value)
    elif not low <= value <= high:
        raise OptionError(
            "{" + parameter + "} must be between {low} and {high}" + unit + ", got {value}",
            low=low, high=high, value=value,
        )
