"""hanodectl slo against a real gRPC server: the burn rates of a hand-computed series (1000
requests in the hour, 20 failed, target 99.9 %: 2 % errors = 20x the budget), as a table and
as JSON; a read-only call."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from hanode.api.roles import Role, method_needs
from tests.unit.api.fake import ThreadedServer, threaded_server
from tests.unit.test_ctl import run


@pytest.fixture()
def server() -> Iterator[ThreadedServer]:
    with threaded_server() as srv:
        yield srv


def test_slo_json(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, out, _ = run(capsys, server, "slo", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["node"] == "n1"
    (slo,) = doc["slos"]
    assert slo["model"] == "m" and slo["request_class"] == "interactive"
    assert slo["requests_1h"] == 1000
    assert slo["success_rate_1h"] == pytest.approx(0.98)
    assert slo["burn"]["1h"] == pytest.approx(20.0)
    assert slo["burn"]["6h"] == pytest.approx(20.0)
    assert slo["mttr_s"] == 4.5
    # The failures were the hour's first 20 requests: the short windows see none of them, so
    # only the 6h/3d pair (20x > 1x on both) fires.
    assert slo["burn"]["5m"] == 0.0 and slo["burn"]["30m"] == 0.0
    assert slo["alerts"] == ["6h/3d"]


def test_slo_table(capsys: pytest.CaptureFixture[str], server: ThreadedServer) -> None:
    code, out, _ = run(capsys, server, "slo")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "SLOs measured by the router of n1:"
    header = lines[1].split()
    assert header[:4] == ["MODEL", "CLASS", "TARGET", "REQ/1H"]
    row = lines[2].split()
    assert row[:5] == ["m", "interactive", "99.90%", "1000", "98.00%"]
    assert "20.00" in row  # the 1 h burn rate


def test_slo_is_a_read() -> None:
    assert method_needs("/hanode.v1.Control/GetSlo") is Role.READ_ONLY
