"""Issue 16, findings 1 and 9, through a real node in front of simulators: a client's timeout
header is the client's deadline, never a verdict on a replica, and never longer than the
operator's. Clients use the official ``openai`` SDK with its own retries off."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import metric_sum
from tests.e2e.failure_support import assert_serving, chat, cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def test_client_timeout_header_opens_no_breaker(tmp_path: Path) -> None:
    """Ten requests with x-hanode-timeout: 0.05 to hanging replicas used to count as replica
    timeouts (breakers open, passive health failed); now each is the client's 504."""
    sections: dict[str, dict[str, Any]] = {
        "retry": {"per_try_timeout_s": 30.0},
        "breaker": {"timeout_trip_count": 1},
    }
    with cluster(tmp_path, 2, sections=sections) as c:
        for sim in c.sims:
            sim.admin("faults", {"hang": 1.0})
        errors: list[tuple[str, openai.APIStatusError]] = []
        with c.client(timeout=10.0) as client:
            for i in range(10):
                header = "x-hanode-timeout" if i % 2 else "x-stainless-timeout"
                with pytest.raises(openai.APIStatusError) as info:
                    chat(client, f"short deadline {i}", extra_headers={header: "0.05"})
                errors.append((header, info.value))
        for name in c.names:
            replica = c.replica(name)
            assert replica["breaker"]["state"] == "closed", replica
            assert replica["health"] == "healthy", replica
        for header, error in errors:
            assert error.status_code == 504
            body = error.body
            assert isinstance(body, dict) and body.get("code") == "client_deadline_exceeded"
            assert header in str(body.get("message"))
        metrics = c.metrics()
        assert metric_sum(metrics, "hanode_upstream_failures_total") == 0
        assert metric_sum(metrics, "hanode_breaker_transitions_total") == 0
        for sim in c.sims:
            sim.admin("faults", {"hang": 0.0})
        assert_serving(c)


def test_client_timeout_header_cannot_lengthen_the_configured_deadline(tmp_path: Path) -> None:
    """x-hanode-timeout: 75 held a request 75 s despite request_timeout_s; now the operator's
    deadline holds, and its expiry is still the replica's timeout."""
    sections: dict[str, dict[str, Any]] = {
        "router": {"request_timeout_s": 0.6},
        "retry": {"per_try_timeout_s": 30.0},
        "health": {"fall": 50, "l2_timeout_s": 5.0},  # the deadline answers, not health
    }
    with cluster(tmp_path, 1, sections=sections) as c:
        c.sims[0].admin("faults", {"hang": 1.0})
        with c.client(timeout=20.0) as client:
            for header in ("x-hanode-timeout", "x-stainless-timeout"):
                t0 = time.monotonic()
                with pytest.raises(openai.APIStatusError) as info:
                    chat(client, extra_headers={header: "75"})
                elapsed = time.monotonic() - t0
                assert info.value.status_code == 504
                assert 0.5 <= elapsed < 3.0, elapsed
                body = info.value.body
                assert isinstance(body, dict) and body.get("code") == "timeout"
                assert "0.6s" in str(body.get("message"))
