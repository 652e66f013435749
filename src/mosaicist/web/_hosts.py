"""Which ``Host`` and ``Origin`` headers name this server.

A browser sends, in ``Host``, the name it looked up to reach the server. A
page of another site can make the browser reach a local server through a
DNS name it controls that resolves to 127.0.0.1 (DNS rebinding); such a
request still carries that name in ``Host``. Requests are therefore
answered only when ``Host`` names the bound address and port itself (or,
for a loopback address, one of the loopback names).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

#: The names every loopback server answers to.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})


def _split_host(value: str) -> tuple[str, int] | None:
    """``name[:port]`` of a Host header as (lower-case name, port); None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[:end + 1], value[end + 1:]
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if not name or rest and not re.fullmatch(r":[0-9]{1,5}", rest):
        return None
    return name, int(rest[1:]) if rest else 80


def _is_ip_literal(name: str) -> bool:
    """Whether ``name`` is an IPv4 address or a bracketed IPv6 address."""
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return name.startswith("[") == (":" in name)


@dataclass(frozen=True)
class HostCheck:
    """The ``Host`` values a server bound to ``host:port`` answers.

    A loopback address also answers to the other loopback names. Bound to
    every interface (``0.0.0.0``, ``::``), any IP literal is accepted as
    well: rebinding needs a DNS name, and every name but the loopback ones
    is refused.

    A server reached under another name (a local DNS name, a tunnel's)
    answers to it when that name is given in ``aliases``: whoever runs the
    server chose it, so it is no name of another site's.

    Parameters
    ----------
    host : str
        The bound address (or ``localhost``), IPv6 with or without brackets.
    port : int
        The bound port.
    aliases : tuple of str
        Other ``Host`` values (``name[:port]``, port 80 when left out) that
        name this server; see :func:`url_hosts`.
    """

    host: str
    port: int
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> frozenset[str]:
        """The lower-case names accepted (IPv6 bracketed)."""
        name = self.host.lower().strip("[]")
        address = self._address()
        names = {f"[{name}]" if address is not None and address.version == 6 else name}
        if name == "localhost" or address is not None and (
            address.is_loopback or address.is_unspecified
        ):
            names |= LOOPBACK_NAMES
        return frozenset(names)

    def _address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.host.strip("[]"))
        except ValueError:
            return None

    def allows(self, value: str) -> bool:
        """Whether a ``Host`` header value names this server (its name and port).

        Parameters
        ----------
        value : str
            The header's value as sent: a name or address, then ``:port``.

        Returns
        -------
        bool
            True for one of this server's names with its port; on a server
            bound to every address, any address literal with its port too.
        """
        host = _split_host(value)
        if host is None:
            return False
        if host in self._aliases():
            return True
        if host[1] != self.port:
            return False
        address = self._address()
        everywhere = address is not None and address.is_unspecified
        return host[0] in self.names or (everywhere and _is_ip_literal(host[0]))

    def same_origin(self, origin: str, host: str) -> bool:
        """Whether an ``Origin`` header is the origin of a request sent to ``Host: host``.

        The page that sends a request must have been loaded from this very
        server under the same name: ``http://`` followed by the (already
        accepted) ``Host`` value. ``null`` (sandboxed frames, ``file:`` pages)
        is not.

        Parameters
        ----------
        origin : str
            The ``Origin`` header's value as sent.
        host : str
            The request's ``Host`` value, already accepted by :meth:`allows`.

        Returns
        -------
        bool
        """
        origin = origin.strip().lower()
        if not self.allows(host):
            return False
        if origin.startswith("https://") and _split_host(host) in self._aliases():
            # A page reached through an alias may be served by a proxy that speaks HTTPS.
            return _split_host(origin[len("https://"):]) in {
                _split_host(host), _split_host(_default_port(host, 443))}
        if not origin.startswith("http://"):
            return False
        return _split_host(origin[len("http://"):]) == _split_host(host)

    def _aliases(self) -> set[tuple[str, int]]:
        return {parsed for alias in self.aliases
                if (parsed := _split_host(alias)) is not None}

    @property
    def url_host(self) -> str:
        """The host as written in a URL (IPv6 bracketed)."""
        name = self.host.strip("[]")
        return f"[{name}]" if ":" in name else name


def _default_port(host: str, port: int) -> str:
    """``host`` (a ``Host`` value) with ``port`` written out when it names none."""
    return host if re.search(r":[0-9]+$", host.rpartition("]")[2]) else f"{host}:{port}"


def url_hosts(url: str) -> tuple[str, ...]:
    """The ``Host`` values a browser sends for an ``http://`` or ``https://`` URL.

    Parameters
    ----------
    url : str
        A link to the server as others reach it (``http://wall.local:8000/``).

    Returns
    -------
    tuple of str
        ``name:port`` (the scheme's port when the URL names none), and the
        bare name when the URL names no port.

    Raises
    ------
    ValueError
        When ``url`` is not an ``http://`` or ``https://`` URL with a host
        name (and a valid port, if any).
    """
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise ValueError("not an http:// or https:// link with a host name")
    port = parts.port  # raises ValueError for a port out of range
    name = parts.hostname.lower()
    if ":" in name:
        name = f"[{name}]"
    if _split_host(name) is None:
        raise ValueError("not an http:// or https:// link with a host name")
    if port is not None:
        return (f"{name}:{port}",)
    return (f"{name}:{443 if scheme == 'https' else 80}", name)
