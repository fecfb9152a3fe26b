"""The one parser for network addresses: ``HOST:PORT`` / ``[v6]:PORT`` and replica base URLs.

A leaf module (standard library only) so that every layer, from the HTTP client to the CLI, can
use it without importing the settings layer. Parsers return ``(value, problem)`` with
``problem`` empty when the text is fine, so a config validator can collect every mistake;
:func:`split_hostport` is the raising form for command-line tools.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "HOST_RE",
    "HostPort",
    "is_ipv6",
    "is_loopback_host",
    "is_wildcard_host",
    "normalize_url",
    "parse_host",
    "parse_hostport",
    "split_hostport",
    "url_host",
]

HOST_RE = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class HostPort:
    """A listen address; ``host`` is stored without IPv6 brackets, as sockets want it."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


NO_ADDRESS = HostPort("", 0)  # the placeholder a failed parse returns


def is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def parse_hostport(text: str) -> tuple[HostPort, str]:
    """Split "HOST:PORT" / "[v6]:PORT"; returns (value, problem), problem "" when fine."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            return NO_ADDRESS, "expected '[IPv6]:PORT', e.g. '[::1]:8080'"
        port_text = rest[1:]
        if not is_ipv6(host):
            return NO_ADDRESS, f"{host!r} is not an IPv6 address"
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            return NO_ADDRESS, "expected 'HOST:PORT', e.g. '0.0.0.0:8080'"
        if ":" in host:
            return NO_ADDRESS, "put IPv6 addresses in brackets, e.g. '[::1]:8080'"
        if not HOST_RE.fullmatch(host):
            return NO_ADDRESS, f"{host!r} is not a valid host"
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        return NO_ADDRESS, f"port must be a number in 1..65535, got {port_text!r}"
    return HostPort(host, int(port_text)), ""


def split_hostport(text: str) -> HostPort:
    """:func:`parse_hostport` for callers that want an exception (ValueError, with the reason)."""
    hp, problem = parse_hostport(text.strip())
    if problem:
        raise ValueError(f"{text!r}: {problem}")
    return hp


def parse_host(text: str) -> tuple[str, str]:
    """A bare host name or IP address (IPv6 with or without brackets); returns (host, problem)."""
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if not (HOST_RE.fullmatch(host) or is_ipv6(host)):
        return host, f"{text!r} is not a valid host"
    return host, ""


def normalize_url(url: str) -> tuple[str, str]:
    """Validate a replica base URL; returns (normalised url, problem), problem "" when fine."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return url, f"{url!r} is not a valid URL ({e})"
    if parts.scheme == "https":
        return url, f"{url!r}: https is not supported yet; use http:// to a local replica"
    if parts.scheme != "http":
        return url, f"{url!r}: expected 'http://HOST:PORT'"
    host = parts.hostname
    if not host:
        return url, f"{url!r}: missing host"
    if not (HOST_RE.fullmatch(host) or ("[" in parts.netloc and is_ipv6(host))):
        return url, f"{url!r}: {host!r} is not a valid host"
    if port is None:
        return url, f"{url!r}: missing port; expected 'http://HOST:PORT'"
    if not 1 <= port <= 65535:
        return url, f"{url!r}: port must be in 1..65535"
    if "@" in parts.netloc:
        return url, f"{url!r}: credentials in the URL are not supported"
    if parts.query or parts.fragment:
        return url, f"{url!r}: must not have a query or fragment"
    if parts.path not in ("", "/"):
        hint = " (drop the /v1: hanode adds API paths itself)" if "v1" in parts.path else ""
        return url, f"{url!r}: must not have a path{hint}"
    return f"http://{parts.netloc}", ""


def url_host(url: str) -> str:
    """The host of a normalised URL, without IPv6 brackets ("" when there is none)."""
    return urlsplit(url).hostname or ""


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: addresses that mean "this host" wherever they are read."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
        ".localhost"
    ):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard_host(host: str) -> bool:
    """0.0.0.0 and :: listen on every address, so they name none that a peer could dial."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False
