"""The one HOST:PORT / URL parser (hanode.addresses); config messages are in test_config.py."""

from __future__ import annotations

import pytest

from hanode.addresses import (
    HostPort,
    is_loopback_host,
    is_wildcard_host,
    normalize_url,
    parse_host,
    parse_hostport,
    split_hostport,
    url_host,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:8080", HostPort("0.0.0.0", 8080)),
        ("[::1]:1", HostPort("::1", 1)),
        ("gpu-1.example:65535", HostPort("gpu-1.example", 65535)),
    ],
)
def test_hostport_round_trips(text: str, expected: HostPort) -> None:
    assert parse_hostport(text) == (expected, "")
    assert str(expected) == text
    assert split_hostport(f" {text} ") == expected


@pytest.mark.parametrize("text", ["8080", "h:0", "::1:80", "[::1]80", "a b:1", "h:x", ""])
def test_bad_hostports(text: str) -> None:
    hp, problem = parse_hostport(text)
    assert problem and hp == HostPort("", 0)
    with pytest.raises(ValueError, match=r"expected|port|IPv6|valid host"):
        split_hostport(text)


def test_hosts() -> None:
    assert parse_host("[::1]") == ("::1", "")
    assert parse_host("10.0.0.11") == ("10.0.0.11", "")
    assert parse_host("bad host")[1] == "'bad host' is not a valid host"
    assert parse_host("[10.0.0.1")[1]  # an unbalanced bracket is not a host


def test_urls() -> None:
    assert normalize_url("HTTP://h:1/") == ("http://h:1", "")
    assert "must not have a path" in normalize_url("http://h:1/v1")[1]
    assert url_host("http://[::1]:8001") == "::1"
    assert url_host("http://127.0.0.1:8001") == "127.0.0.1"


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "a.localhost"]
)
def test_loopback(host: str) -> None:
    assert is_loopback_host(host)
    assert not is_wildcard_host(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]"])
def test_wildcard(host: str) -> None:
    assert is_wildcard_host(host)
    assert not is_loopback_host(host)


def test_config_reexports_the_address_helpers() -> None:
    # Other modules import these from hanode.config (hanode/cluster/addresses.py does).
    import hanode.config

    assert hanode.config.HostPort is HostPort
    assert hanode.config.is_loopback_host is is_loopback_host
    assert hanode.config.is_wildcard_host is is_wildcard_host
