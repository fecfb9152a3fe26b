"""What other nodes dial: loopback and wildcard hosts replaced by the advertise host."""

from __future__ import annotations

import pytest

from hanode.cluster.addresses import advertised_hostport, advertised_url


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("http://127.0.0.1:8001", "http://10.0.0.5:8001"),
        ("http://127.3.4.5:8001", "http://10.0.0.5:8001"),
        ("http://localhost:8001", "http://10.0.0.5:8001"),
        ("http://[::1]:8001", "http://10.0.0.5:8001"),
        ("http://0.0.0.0:8001", "http://10.0.0.5:8001"),
        ("http://10.0.0.9:8001", "http://10.0.0.9:8001"),  # already routable: as written
        ("http://gpu-3.internal:8001", "http://gpu-3.internal:8001"),
    ],
)
def test_urls(url: str, want: str) -> None:
    assert advertised_url(url, "10.0.0.5") == want
    assert advertised_url(url, None) == url


def test_ipv6_advertise_host_is_bracketed() -> None:
    assert advertised_url("http://127.0.0.1:1", "fd00::5") == "http://[fd00::5]:1"
    assert advertised_hostport("0.0.0.0:9200", "fd00::5") == "[fd00::5]:9200"


def test_hostports() -> None:
    assert advertised_hostport("0.0.0.0:8080", "10.0.0.5") == "10.0.0.5:8080"
    assert advertised_hostport("127.0.0.1:9100", "10.0.0.5") == "10.0.0.5:9100"
    assert advertised_hostport("[::]:9100", "10.0.0.5") == "10.0.0.5:9100"
    assert advertised_hostport("10.0.0.7:9100", "10.0.0.5") == "10.0.0.7:9100"
    assert advertised_hostport("", "10.0.0.5") == ""
