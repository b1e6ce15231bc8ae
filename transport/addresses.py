"""``HOST:PORT`` as operators type it, for every side: the master, the worker, the CLI.

Standard library only, and no imports at all: the command line reads an
address before it loads anything heavier.
"""

from __future__ import annotations

# Hosts a listener binds to mean "every address of this machine".
WILDCARDS = ("0.0.0.0", "::", "")


def split_hostport(
    text: str,
    default_port: int | None,
    *,
    what: str = "address",
    port_zero: bool = True,
    default_host: str | None = "127.0.0.1",
) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` into ``(host, port)``.

    ``HOST`` alone has ``default_port`` and ``:PORT`` has ``default_host``;
    None makes that part required.  Port 0 (any free port, for a listener)
    is allowed unless ``port_zero`` is False.  ValueError, saying ``bad
    {what} 'TEXT': expected HOST:PORT``, if the text is not such an address.
    """
    host, sep, port = text.rpartition(":")
    if not sep and default_port is not None:
        host, port = text, str(default_port)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    host = host or default_host or ""
    digits = port.isascii() and port.isdigit() and len(port) <= 5
    if not host or not digits or not (0 if port_zero else 1) <= int(port) <= 65535:
        raise ValueError(f"bad {what} {text!r}: expected HOST:PORT")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (127.0.0.0/8, ::1): traffic that stays here."""
    if host.lower() == "localhost" or host == "::1":
        return True
    parts = host.split(".")
    if (
        len(parts) == 4
        and parts[0] == "127"
        and all(p.isascii() and p.isdigit() and int(p) < 256 for p in parts)
    ):
        return True  # the common case, without ipaddress's import (3 ms of every verb)
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def join_hostport(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets (as `split_hostport` reads it)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def from_here(host: str) -> str:
    """The host a client on this machine dials for a listener bound to ``host``.

    A wildcard means every address, loopback among them (and loopback is
    in the certificate of a master listening on every address).
    """
    if host == "::":
        return "::1"
    return "127.0.0.1" if host in WILDCARDS else host
