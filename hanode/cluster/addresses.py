"""What other nodes must dial: loopback and wildcard hosts replaced by the advertise host.

A replica configured as ``http://127.0.0.1:8001`` is right for this node's own router and wrong
for every other node, which would dial its own loopback. The replicated copy carries
``[node].advertise_host`` instead; this node keeps routing to the local URL.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from hanode.addresses import is_loopback_host, is_wildcard_host, split_hostport


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def advertised_url(url: str, advertise_host: str | None) -> str:
    """``url`` with a loopback or wildcard host replaced by ``advertise_host`` (if set)."""
    if not advertise_host:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not (is_loopback_host(host) or is_wildcard_host(host)) or parts.port is None:
        return url
    return f"{parts.scheme}://{_bracket(advertise_host)}:{parts.port}"


def advertised_hostport(address: str, advertise_host: str | None) -> str:
    """ "HOST:PORT" with a loopback or wildcard host replaced by ``advertise_host`` (if set)."""
    if not advertise_host or not address:
        return address
    hp = split_hostport(address)
    if is_loopback_host(hp.host) or is_wildcard_host(hp.host):
        return f"{_bracket(advertise_host)}:{hp.port}"
    return address
