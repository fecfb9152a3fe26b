"""Issue 14: a request id follows a request across the router, the relay's tries and the
replicas (sent upstream as `x-request-id`), the client's own or a new one."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import E2EProcs

pytestmark = pytest.mark.e2e


def test_request_id_reaches_every_try_and_the_logs(e2e_procs: E2EProcs) -> None:
    # r0 answers 503 (busy) to everything; r1 serves. A request that lands on r0 first fails
    # over to r1: both replicas must see the same id, and the router's try_failed line too.
    c = e2e_procs.cluster([["--ttft-ms", "2"], ["--ttft-ms", "2"]])
    c.sims[0].admin("faults", {"busy": 1.0})
    client = c.openai()
    seen_r0 = False
    for i in range(12):
        rid = f"client-req-{i}"
        raw = client.chat.completions.with_raw_response.create(
            model=c.model,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
            extra_headers={"x-request-id": rid},
        )
        assert raw.headers["x-request-id"] == rid
        assert raw.headers["x-hanode-replica"] == "r1"
        assert rid in c.sims[1].admin("state")["request_ids"]
        if rid in c.sims[0].admin("state")["request_ids"]:
            seen_r0 = True  # this one tried r0 first: its failed try is logged with the id
            lines = [json.loads(x) for x in c.node.output().splitlines() if rid in x]
            assert any(x.get("event") == "try_failed" and x.get("replica") == "r0" for x in lines)
    assert seen_r0, "no request tried r0 first in 12 (weights should spread them)"
    # Without the client's id, hanode makes one, returns it, and sends it upstream.
    raw = client.chat.completions.with_raw_response.create(
        model=c.model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    made = raw.headers["x-request-id"]
    assert made and made in c.sims[1].admin("state")["request_ids"]
