"""End-to-end: requests waiting on a replica that stops answering fail over as soon as health
takes it out, not after the per-try timeout.

A replica hangs on inference and then its process is stopped (SIGSTOP: connections stay open
and the kernel still acknowledges, so nothing at the socket says it is dead). Its health probes
time out, it goes DOWN, and the front door fails the waiting tries over to the other replica.
With a 30 s per-try timeout, every client (10 s timeout, SDK retries off) must still succeed.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import metric_sum
from tests.e2e.failure_support import CHAT, MODEL, cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def test_tries_stuck_on_a_stopped_replica_fail_over_when_it_goes_down(tmp_path: Path) -> None:
    with cluster(tmp_path, 2, sections={"retry": {"per_try_timeout_s": 30.0}}) as c:
        node = c.node
        r1 = c.sims[1]
        r1.admin("faults", {"hang": 1.0})
        client = openai.OpenAI(
            base_url=node.router_url + "/v1", api_key="x", max_retries=0, timeout=10.0
        )
        results: list[tuple[float, str | None, Any]] = []
        lock = threading.Lock()

        def one() -> None:
            t0 = time.monotonic()
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "Say something short."}],
                    max_tokens=8,
                )
                reply = raw.parse()
                outcome: Any = reply.choices[0].message.content
                replica = raw.headers.get("x-hanode-replica")
            except openai.OpenAIError as exc:
                outcome, replica = exc, None
            with lock:
                results.append((time.monotonic() - t0, replica, outcome))

        def held_by_r1() -> int:
            return int(r1.admin("state")["per_endpoint"].get(CHAT, 0))

        threads: list[threading.Thread] = []
        for _ in range(40):  # until two requests wait on r1 (the picker is random)
            t = threading.Thread(target=one, daemon=True)
            t.start()
            threads.append(t)
            time.sleep(0.02)
            if held_by_r1() >= 2:
                break
        stuck = held_by_r1()
        assert stuck >= 2, "no request reached r1"
        r1.kill(signal.SIGSTOP)
        try:
            for t in threads:
                t.join(20.0)
            assert not any(t.is_alive() for t in threads)
            errors = [o for _, _, o in results if isinstance(o, Exception)]
            assert errors == [], errors[:3]
            assert all(replica == "r0" for _, replica, _ in results)
            slowest = max(took for took, _, _ in results)
            assert slowest < 8.0, f"a request took {slowest:.1f}s"
            doc = node.wait_health({"r1": "down"}, timeout=10.0)
            assert {r["name"]: r["weight"] for r in doc["replicas"]}["r1"] == 0
            metrics = node.metrics_text()
            dead = metric_sum(
                metrics,
                "hanode_upstream_failures_total",
                replica="r1",
                failure_class="replica_dead",
            )
            assert dead == stuck
        finally:
            r1.kill(signal.SIGCONT)
