"""End-to-end failure handling, request and pool limits: context overflow, a failing pool under
the retry budget, seed pinning across a retry, the GPU-memory gate with its hysteresis, the front
door's input limits and per-model deadlines. Clients use the official ``openai`` SDK with its own
retries off, so every retry seen here is hanode's.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import metric_sum
from tests.e2e.failure_support import (
    CHAT,
    FAST_SIM,
    MESSAGES,
    MODEL,
    assert_serving,
    chat,
    cluster,
    raw_exchange,
    read_to_close,
    status_of,
)
from tests.support.procs import (
    SimProcess,
    http_get,
    http_request,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


# -- 5. context overflow -------------------------------------------------------------------------
def test_context_overflow_is_400_at_once_without_retry(tmp_path: Path) -> None:
    sim_args = (*FAST_SIM, "--max-model-len", "64")
    with cluster(tmp_path, 2, sim_args=sim_args) as c:
        before_counts = c.chat_counts()
        before = c.metrics()
        with c.client() as client:
            t0 = time.monotonic()
            with pytest.raises(openai.BadRequestError) as info:
                chat(client, "word " * 80, max_tokens=16)
            took = time.monotonic() - t0
        err = info.value
        assert err.status_code == 400
        assert err.code == "context_length_exceeded", err.body
        assert isinstance(err.body, dict) and err.body.get("code") == "context_length_exceeded"
        assert "maximum context length" in err.message
        assert took < 1.0, f"took {took:.2f}s"
        delta = [a - b for a, b in zip(c.chat_counts(), before_counts, strict=True)]
        assert sorted(delta) == [0, 1], f"replica tries {delta}: want exactly one try"
        after = c.metrics()
        assert metric_sum(after, "hanode_retries_total") == metric_sum(
            before, "hanode_retries_total"
        )
        assert metric_sum(after, "hanode_breaker_transitions_total") == 0
        assert (
            metric_sum(after, "hanode_upstream_failures_total", failure_class="context_length") == 1
        )
        for name in c.names:
            assert c.replica(name)["breaker"]["state"] == "closed"
            assert c.replica(name)["breaker"].get("weight_factor", 1.0) == 1.0
        # the same request shortened is fine: nothing was held against the replicas
        assert_serving(c)


# -- 6. all replicas failing: the retry budget ------------------------------------------------
def test_all_replicas_failing_retries_stay_within_budget(tmp_path: Path) -> None:
    ratio, floor_per_s, window_s = 0.1, 0.5, 10.0
    sections = {
        "retry": {"budget_ratio": ratio, "budget_min_per_s": floor_per_s, "max_attempts": 3},
        # no backoff pause after a 503 worth mentioning, and health stays out of it: every
        # request reaches a replica, so only the budget limits the retries
        "breaker": {"busy_backoff_s": 0.001},
        "health": {"fall": 1000},
    }
    requests = 100
    with cluster(tmp_path, 3, sections=sections) as c:
        for sim in c.sims:
            sim.admin("faults", {"busy": 1.0})
        before_counts = c.chat_counts()
        slowest = 0.0
        statuses: list[int] = []
        with c.client(timeout=10.0) as client:
            for i in range(requests):
                t0 = time.monotonic()
                with pytest.raises(openai.APIStatusError) as info:
                    chat(client, f"failing {i}")
                slowest = max(slowest, time.monotonic() - t0)
                statuses.append(info.value.status_code)
                assert info.value.response.headers.get("retry-after"), info.value.response.headers
        assert set(statuses) == {503}, statuses
        assert slowest < 1.0, f"slowest 503 took {slowest:.2f}s"
        tries = sum(c.chat_counts()) - sum(before_counts)
        metrics = c.metrics()
        retries = metric_sum(metrics, "hanode_retries_total")
        exhausted = metric_sum(metrics, "hanode_retry_budget_exhausted_total")
        limit = requests * ratio + floor_per_s * window_s
        assert tries == requests + retries, (tries, retries)
        assert 1 <= retries <= limit + 1, f"{retries:g} retries, budget {limit:g}"
        assert tries <= requests * (1 + ratio) + floor_per_s * window_s + 2
        # without the budget there would be (max_attempts - 1) retries per request
        assert exhausted >= requests - limit - 1, f"budget exhausted only {exhausted:g} times"
        assert metric_sum(metrics, "hanode_retries_total", failure_class="busy") == retries
        assert metric_sum(metrics, "hanode_requests_total", status="503") == requests


# -- 7. seed pinning ------------------------------------------------------------------------------
def test_pinned_seed_gives_same_text_on_retry_to_another_replica(tmp_path: Path) -> None:
    sections = {
        # keep the failing replica in play at full weight, so the first try often lands on it
        "breaker": {"oom_trip_count": 1000, "oom_weight_cut": 1.0},
        "health": {"fall": 1000},
    }
    with cluster(tmp_path, 2, sections=sections) as c:

        def direct(sim: SimProcess, content: str, seed: int) -> str:
            with openai.OpenAI(
                base_url=sim.url + "/v1", api_key="x", max_retries=0, timeout=10.0
            ) as client:
                reply = chat(client, content, temperature=1.0, seed=seed, max_tokens=24)
            text = reply.choices[0].message.content
            assert text
            return str(text)

        with c.client() as client:
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=[{"role": "user", "content": "tell me a story"}],
                temperature=1.0,
                max_tokens=24,
            )
            seed_header = raw.headers.get("x-hanode-seed")
            assert seed_header is not None and seed_header.isdigit(), dict(raw.headers)
            seed = int(seed_header)
            text = raw.parse().choices[0].message.content
            assert text
            for sim in c.sims:
                assert direct(sim, "tell me a story", seed) == text
            # a different seed gives a different text (the comparison can fail)
            assert direct(c.sims[0], "tell me a story", seed + 1) != text

            # r0 fails with an OOM; whichever replica a request lands on first, r1 answers
            c.sims[0].admin("faults", {"oom": 1.0})
            retried: list[tuple[str, int, str]] = []
            for i in range(40):
                content = f"story number {i}"
                counts = c.chat_counts()
                raw = client.chat.completions.with_raw_response.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": content}],
                    temperature=1.0,
                    max_tokens=24,
                )
                assert raw.headers.get("x-hanode-replica") == "r1"
                reply_text = raw.parse().choices[0].message.content
                assert reply_text
                seed = int(raw.headers["x-hanode-seed"])
                if c.chat_counts()[0] > counts[0]:  # the first try went to r0 and failed
                    retried.append((content, seed, str(reply_text)))
                    if len(retried) >= 2:
                        break
            assert retried, "no request was retried after an OOM on r0"
            c.sims[0].admin("faults", {"clear": True})
            for content, seed, reply_text in retried:
                assert direct(c.sims[1], content, seed) == reply_text
                assert direct(c.sims[0], content, seed) == reply_text
        assert metric_sum(c.metrics(), "hanode_retries_total", failure_class="gpu_oom") >= 1


# -- 8. GPU memory gate ---------------------------------------------------------------------------
def test_gpu_memory_removes_replica_with_hysteresis_and_returns(tmp_path: Path) -> None:
    # --reserve-gpu 0: an engine that allocates as it goes (llama.cpp-like), so the pressure
    # is device memory used; reserving engines are test_health_signals.py's
    with cluster(tmp_path, 2, sim_args=(*FAST_SIM, "--reserve-gpu", "0")) as c:
        gpu_sim = c.sims[1]

        def send(n: int, tag: str) -> None:
            with c.client() as client:
                for i in range(n):
                    assert chat(client, f"{tag} {i}").choices[0].message.content

        def scraped(frac: float) -> dict[str, Any] | None:
            r = c.replica("r1")
            return r if r["gpu_mem"] == frac else None

        gpu_sim.admin("gpu", {"gpu_mem": 0.96})
        r1 = wait_until(lambda: scraped(0.96), timeout=5.0, message="gpu 0.96 scraped")
        r1 = wait_until(
            lambda: (r := c.replica("r1"))["weight"] == 0 and r,
            timeout=5.0,
            message="r1 weight 0",
        )
        assert "GPU memory pressure 96% (device memory used)" in r1["reason"], r1
        before = c.chat_counts()
        send(20, "removed")
        after = c.chat_counts()
        assert after[1] == before[1], "a removed replica got traffic"
        assert after[0] == before[0] + 20

        # between recover (0.90) and remove (0.95): stays out
        gpu_sim.admin("gpu", {"gpu_mem": 0.93})
        wait_until(lambda: scraped(0.93), timeout=5.0, message="gpu 0.93 scraped")
        time.sleep(1.0)  # several health rounds at 0.93
        assert c.replica("r1")["weight"] == 0
        before = c.chat_counts()
        send(20, "hysteresis")
        assert c.chat_counts()[1] == before[1], "replica came back above the recover mark"

        gpu_sim.admin("gpu", {"gpu_mem": 0.5})
        wait_until(lambda: c.replica("r1")["weight"] > 0, timeout=5.0, message="r1 back")
        before = c.chat_counts()
        send(40, "recovered")
        assert c.chat_counts()[1] > before[1], "the recovered replica got no traffic"

        code, _, body = http_get(c.node.ops_url + "/events", timeout=2.0)
        assert code == 200
        gpu_events = [
            e
            for e in json.loads(body)["events"]
            if e["kind"] == "gpu_memory" and e["subject"] == "r1"
        ]
        levels = [e["fields"]["level"] for e in gpu_events]
        assert levels == ["remove", "normal"], gpu_events
        assert "96%" in gpu_events[0]["message"] and "50%" in gpu_events[1]["message"]
        metrics = c.metrics()
        assert metric_sum(metrics, "hanode_gpu_memory_events_total", replica="r1") == 2


# -- 9. input limits --------------------------------------------------------------------------
def test_input_limits_refuse_cleanly_and_node_keeps_serving(tmp_path: Path) -> None:
    sections = {
        "router": {
            "max_body_bytes": 64 * 1024,
            "max_header_bytes": 8 * 1024,
            "header_timeout_s": 1.0,
            "max_connections": 5,
            "max_tokens_limit": 64,
            "max_n": 4,
        }
    }
    with cluster(tmp_path, 1, sections=sections) as c:
        port = c.node.router_port
        url = c.node.router_url + CHAT
        ok_body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4}

        # connection cap first, while nothing else holds a connection to the router
        held: list[socket.socket] = []
        try:
            for _ in range(5):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5.0))
            time.sleep(0.3)  # let the server accept all five
            raw, took, closed = raw_exchange(port, b"", timeout=5.0)
            assert status_of(raw) == 503 and closed, raw
            assert b"too many connections" in raw
            # the held ones still work
            held[0].sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            raw, _, _ = read_to_close(held[0], time.monotonic(), 5.0)
            assert status_of(raw) == 200, raw
        finally:
            for s in held:
                s.close()
        wait_until(
            lambda: http_get(c.node.router_url + "/health", timeout=1.0)[0] == 200,
            timeout=5.0,
            message="router accepts again",
        )
        assert_serving(c)

        # body too large: refused from the content-length alone
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % (100 * 1024)
        )
        raw, _, closed = raw_exchange(port, head + b"{" + b" " * 1000)
        assert status_of(raw) == 413 and closed, raw
        # ... and a chunked body that grows past the limit
        chunk = b" " * 16 * 1024
        chunked = (
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 5
        )
        raw, _, closed = raw_exchange(port, chunked)
        assert status_of(raw) == 413 and closed, raw

        # headers too large
        big = b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 10_000 + b"\r\n\r\n"
        raw, _, closed = raw_exchange(port, big)
        assert status_of(raw) == 431 and closed, raw

        # slowloris: a partial request, then nothing -> 408 after header_timeout_s, closed
        raw, took, closed = raw_exchange(
            port, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n", timeout=5.0
        )
        assert status_of(raw) == 408 and closed, raw
        assert 0.8 <= took <= 2.5, f"slow client cut after {took:.2f}s"

        # malformed request line
        raw, _, closed = raw_exchange(port, b"THIS IS NOT HTTP\r\n\r\n")
        assert status_of(raw) == 400 and closed, raw

        # JSON nested deeper than 32
        deep: Any = "x"
        for _ in range(40):
            deep = [deep]
        code, _, body = http_request("POST", url, {**ok_body, "extra": deep}, timeout=5.0)
        assert code == 400, body
        assert "nested deeper than 32" in json.loads(body)["error"]["message"]
        tries = c.chat_counts()[0]

        with c.client() as client:
            with pytest.raises(openai.BadRequestError) as info:
                chat(client, max_tokens=65)
            assert info.value.body["param"] == "max_tokens"  # type: ignore[index]
            with pytest.raises(openai.BadRequestError) as info:
                chat(client, n=5)
            assert info.value.body["param"] == "n"  # type: ignore[index]
            # the limits themselves are allowed
            assert chat(client, max_tokens=64, n=4).choices
        # refusals never reached the replica; only the allowed request did
        assert c.chat_counts()[0] == tries + 1
        assert_serving(c)
        assert c.node.replicas()["r0"]["health"] == "healthy"


def test_per_model_default_deadline(tmp_path: Path) -> None:
    """A model's own request_timeout_s bounds a request whose replica never starts answering."""
    with cluster(
        tmp_path,
        1,
        sections={"retry": {"per_try_timeout_s": 30.0}},
        models=[{"name": MODEL, "request_timeout_s": 0.6}],
    ) as c:
        c.sims[0].admin("faults", {"hang": 1.0})
        t0 = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            chat(c.client(timeout=10.0))
        elapsed = time.monotonic() - t0
        assert info.value.status_code == 504
        assert 0.5 <= elapsed < 2.0, elapsed
