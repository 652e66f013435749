"""Registries of backends: one table per kind (matchers, output formats), open to plugins.

A :class:`Registry` maps names to backends in the order they were added, so
that listings (``--help``, error messages) are stable and built-ins come
first. Code outside the package adds its own with ``register``.

A backend from outside the package (a plugin) is code mosaicist cannot
vouch for: :func:`guarded` wraps its methods so that an unexpected exception
becomes a :class:`PluginError`, one line naming the plugin, rather than a
traceback far from its cause.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .errors import MosaicistError, OptionError, alternatives

T = TypeVar("T")

#: What a registered name may hold: it is typed on command lines and written in reports,
#: so it is one lower-case word (``exact``, ``.png``, ``my-matcher``, ``tpu2``).
_NAME = re.compile(r"[a-z0-9._+-]*[a-z0-9][a-z0-9._+-]*")


def check_name(name: object, what: str) -> str:
    """Return ``name`` when it can name a backend; raise otherwise.

    Parameters
    ----------
    name : object
        The name (a matcher's ``name`` or ``search``, a device, a suffix).
    what : str
        What it names, for the message (``"the search of matcher pkg.Class"``).

    Returns
    -------
    str
        ``name``.

    Raises
    ------
    TypeError
        When ``name`` is no text.
    ValueError
        When it is empty or holds anything but lower-case ASCII letters,
        digits, ``.``, ``_``, ``+`` and ``-``.
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a text, got {type(name).__name__} {name!r}")
    if not _NAME.fullmatch(name):
        raise ValueError(f"{what} must be one word of lower-case letters, digits, '.', '_', "
                         f"'+' and '-', got {name!r}")
    return name


class PluginError(MosaicistError):
    """A backend from outside the package failed or broke its interface.

    The message names the backend (kind, name and class), the method, and
    what went wrong; the original exception, if any, is the ``__cause__``.
    """


class PluginMemoryError(PluginError, MemoryError):
    """A plugin ran out of memory: a :class:`PluginError` that is also a :class:`MemoryError`."""


def describe(kind: str, backend: object) -> str:
    """``backend`` in a message: its kind, name and class (``matcher 'x' (pkg.Class)``).

    Parameters
    ----------
    kind : str
        What it is (``"matcher"``).
    backend : object
        The backend; its ``name`` attribute is shown when it has one.
    """
    cls = type(backend)
    name = getattr(backend, "name", None)
    shown = f" {name!r}" if isinstance(name, str) else ""
    return f"{kind}{shown} ({cls.__module__}.{cls.__qualname__})"


def guarded(kind: str, function: Callable[..., Any],
            check: Callable[[Any, Any, tuple[Any, ...]], Any] | None = None,
            method: str | None = None) -> Callable[..., Any]:
    """Wrap a plugin's method so that its failures are one line naming the plugin.

    A :class:`MosaicistError` it raises is its own one-line message and is
    kept; an interrupt (``KeyboardInterrupt``, ``SystemExit``) unwinds as it
    came; any other exception becomes a :class:`PluginError` (a
    :class:`PluginMemoryError` for a ``MemoryError``) caused by it.

    Parameters
    ----------
    kind : str
        What the plugin is (``"matcher"``), for messages.
    function : callable
        The method, as defined in the plugin's class (``self`` first).
    check : callable, optional
        ``check(self, returned, args)``: the value to return in place of
        ``returned``, or raise a :class:`PluginError` when it breaks the
        interface.
    method : str, optional
        The method's name in messages (default: ``function.__name__``).

    Returns
    -------
    callable
        The guarded method.
    """
    method = method or function.__name__

    @functools.wraps(function)
    def guard(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            returned = function(self, *args, **kwargs)
        except MosaicistError:
            raise
        except MemoryError as error:
            raise PluginMemoryError(f"{describe(kind, self)} ran out of memory in {method}()"
                                    ) from error
        except Exception as error:
            detail = str(error)
            raise PluginError(f"{describe(kind, self)} failed in {method}(): "
                              f"{type(error).__name__}{': ' + detail if detail else ''}"
                              ) from error
        return returned if check is None else check(self, returned, args)

    guard.__guarded__ = True  # type: ignore[attr-defined]
    return guard


def guard_plugin(cls: type, kind: str,
                 checks: Mapping[str, Callable[[Any, Any, tuple[Any, ...]], Any] | None]) -> None:
    """Guard the methods a plugin class defines (:func:`guarded`); the package's own are left.

    Called from a backend base class's ``__init_subclass__``: the methods are
    wrapped where they are defined, so that every caller gets the same
    one-line failures. A class of the ``mosaicist`` package is tested against
    its references, and its bugs are shown whole.

    Parameters
    ----------
    cls : type
        The new subclass.
    kind : str
        What its instances are (``"matcher"``), for messages.
    checks : mapping
        Method name -> the ``check`` of :func:`guarded` for it (None: none).
    """
    if cls.__module__.partition(".")[0] == "mosaicist":
        return
    for method, check in checks.items():
        function = cls.__dict__.get(method)
        if inspect.isfunction(function) and not getattr(function, "__guarded__", False):
            setattr(cls, method, guarded(kind, function, check, method))


class Registry(Mapping[str, T], Generic[T]):
    """Named backends of one kind.

    Parameters
    ----------
    kind : str
        What the entries are, for messages (``"matcher"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add ``entry`` under ``name``; return it.

        Parameters
        ----------
        name : str
            One lower-case word (see :func:`check_name`).
        entry : object
            The backend.
        replace : bool
            Allow replacing the entry already under ``name`` (it keeps its
            place in the order).

        Returns
        -------
        object
            ``entry``.

        Raises
        ------
        TypeError
            When ``name`` is no text.
        ValueError
            When ``name`` is not one lower-case word, or is taken and
            ``replace`` is false.
        """
        check_name(name, f"a name in the {self.kind} table")
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove and return the entry under ``name``.

        Raises
        ------
        KeyError
            When no entry has that name.
        """
        try:
            return self._entries.pop(name)
        except KeyError:
            raise KeyError(f"no {self.kind} {name!r} is registered") from None

    def lookup(self, name: str, parameter: str) -> T:
        """Return the entry under ``name``, or raise :class:`OptionError` naming ``parameter``."""
        try:
            return self._entries[name]
        except KeyError:
            raise OptionError(
                "unknown {" + parameter + "} {value!r}; use {known}",
                value=name, known=alternatives(self._entries),
            ) from None

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
