"""Registries of backends: one table per kind (matchers, output formats), open to plugins.

A :class:`Registry` maps names to backends in the order they were added, so
that listings (``--help``, error messages) are stable and built-ins come
first. Code outside the package adds its own with ``register``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from .errors import OptionError

T = TypeVar("T")


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

        Raises
        ------
        ValueError
            When ``name`` is taken and ``replace`` is false.
        """
        if not name:
            raise ValueError(f"a {self.kind} needs a name")
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove and return the entry under ``name``."""
        return self._entries.pop(name)

    def lookup(self, name: str, parameter: str) -> T:
        """Return the entry under ``name``, or raise :class:`OptionError` naming ``parameter``."""
        try:
            return self._entries[name]
        except KeyError:
            raise OptionError(
                "unknown {" + parameter + "} {value!r}; use {known}",
                value=name, known=", ".join(self._entries),
            ) from None

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
