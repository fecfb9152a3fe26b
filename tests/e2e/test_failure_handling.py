"""End-to-end failure handling: real ``hanode sim`` replicas behind one real ``hanode run`` node.

One test per acceptance point: a killed replica, a hanging one, OOMs, 429s, context overflow,
a failing pool under the retry budget, seed pinning across a retry, the GPU-memory gate with its
hysteresis, and the front door's input limits. Clients use the official ``openai`` SDK with its
own retries off, so every retry seen here is hanode's.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import metric_sum
from tests.support.procs import (
    NodeProcess,
    SimProcess,
    free_port,
    http_get,
    http_request,
    node_config_toml,
    start_sim,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

MODEL = "sim-model"
CHAT = "/v1/chat/completions"
FAST_SIM = ("--ttft-ms", "2", "--tpot-ms", "1")
# Fast health rounds; L2 (test prompt) only when traffic failed, with a short timeout.
HEALTH = {"interval_s": 0.2, "timeout_s": 1.0, "rise": 1, "fall": 2, "l2_timeout_s": 1.0}
MESSAGES = [{"role": "user", "content": "Say something short."}]


# -- helpers ------------------------------------------------------------------------------------
@dataclass
class Cluster:
    sims: list[SimProcess]
    node: NodeProcess
    names: list[str]

    def client(self, timeout: float = 10.0) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.node.router_url + "/v1", api_key="x", max_retries=0, timeout=timeout
        )

    def replica(self, name: str) -> dict[str, Any]:
        return self.node.replicas()[name]

    def metrics(self) -> str:
        return self.node.metrics_text()

    def chat_counts(self) -> list[int]:
        """Chat completions each sim received (health probes use /v1/completions)."""
        return [int(s.admin("state")["per_endpoint"].get(CHAT, 0)) for s in self.sims]


@contextlib.contextmanager
def cluster(
    tmp_path: Path,
    n: int,
    *,
    sim_args: tuple[str, ...] = FAST_SIM,
    sections: dict[str, dict[str, Any]] | None = None,
    models: list[dict[str, Any]] | None = None,
    wait_healthy: bool = True,
) -> Iterator[Cluster]:
    """``n`` simulators (started in parallel) and one node routing to them."""
    merged: dict[str, dict[str, Any]] = {"health": dict(HEALTH)}
    for table, values in (sections or {}).items():
        merged.setdefault(table, {}).update(values)
    with contextlib.ExitStack() as stack:
        sims = [stack.enter_context(start_sim(*sim_args, wait="none")) for _ in range(n)]
        for sim in sims:
            sim.wait_ready(15.0)
        names = [f"r{i}" for i in range(n)]
        config = tmp_path / "node.toml"
        config.write_text(
            node_config_toml(
                name="n1",
                data_dir=tmp_path / "data",
                router_port=free_port(),
                metrics_port=free_port(),
                replicas=[
                    {"name": name, "model": MODEL, "url": sim.url, "engine": "vllm"}
                    for name, sim in zip(names, sims, strict=True)
                ],
                sections=merged,
                models=models,
            )
        )
        node = stack.enter_context(NodeProcess(config, log_path=tmp_path / "node.log"))
        c = Cluster(sims, node, names)
        if wait_healthy:
            node.wait_health(dict.fromkeys(names, "healthy"), timeout=15.0)
        yield c


def chat(client: openai.OpenAI, content: str = "Say something short.", **kw: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=kw.pop("max_tokens", 8),
        **kw,
    )


def raw_exchange(
    port: int, payload: bytes, timeout: float = 5.0, shutdown_write: bool = False
) -> tuple[bytes, float, bool]:
    """Send ``payload`` on a fresh socket; read until the server closes or ``timeout``.

    Returns (bytes read, seconds until the server closed or the timeout, closed by server).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        t0 = time.monotonic()
        if payload:
            s.sendall(payload)
        if shutdown_write:
            s.shutdown(socket.SHUT_WR)
        return _read_to_close(s, t0, timeout)


def _read_to_close(s: socket.socket, t0: float, timeout: float) -> tuple[bytes, float, bool]:
    data = b""
    deadline = t0 + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, time.monotonic() - t0, False
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            return data, time.monotonic() - t0, False
        except ConnectionResetError:
            return data, time.monotonic() - t0, True
        if not chunk:
            return data, time.monotonic() - t0, True
        data += chunk


def status_of(raw: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", raw)
    assert m, f"no HTTP status line in {raw[:200]!r}"
    return int(m.group(1))


def assert_serving(c: Cluster) -> None:
    """The node is alive and answers a normal request through the front door."""
    assert c.node.alive, c.node.output()[-3000:]
    with c.client() as client:
        reply = chat(client)
    assert reply.choices[0].message.content


# -- 1. a killed replica ---------------------------------------------------------------------
def test_sigkill_under_steady_traffic_costs_no_request(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c:
        stop = threading.Event()
        errors: list[str] = []
        served: list[int] = []
        lock = threading.Lock()

        def worker(k: int) -> None:
            with c.client(timeout=10.0) as client:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        reply = chat(client, f"worker {k} request {i}")
                        ok = bool(reply.choices[0].message.content)
                    except Exception as exc:
                        with lock:
                            errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    with lock:
                        served.append(k) if ok else errors.append("empty answer")

        threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(4)]
        for t in threads:
            t.start()
        try:
            # steady traffic first, then the kill, then traffic well after it
            wait_until(lambda: len(served) >= 40, timeout=15.0, message="steady traffic")
            before_kill = len(served)
            victim = c.sims[1]
            victim.kill(signal.SIGKILL)
            victim.wait_exit(5.0)
            time.sleep(1.0)
            wait_until(
                lambda: len(served) >= before_kill + 40, timeout=15.0, message="traffic after kill"
            )
        finally:
            stop.set()
        for t in threads:
            t.join(15.0)
        assert not any(t.is_alive() for t in threads), "client threads did not stop"
        assert errors == [], f"{len(errors)} client errors, e.g. {errors[:3]}"
        doc = c.node.wait_health({"r1": "down"}, timeout=10.0)
        by_name = {r["name"]: r for r in doc["replicas"]}
        assert by_name["r1"]["weight"] == 0
        assert by_name["r0"]["health"] == "healthy" and by_name["r2"]["health"] == "healthy"
        metrics = c.metrics()
        assert metric_sum(metrics, "hanode_upstream_failures_total", replica="r1") >= 1


# -- 2. a hanging replica ----------------------------------------------------------------------
def test_hanging_replica_is_cut_by_per_try_timeout_and_breaker_opens(tmp_path: Path) -> None:
    per_try = 0.5
    sections = {
        "retry": {"per_try_timeout_s": per_try},
        "breaker": {"timeout_trip_count": 2, "open_base_s": 30.0, "open_max_s": 60.0},
        # keep health out of it: the breaker, not the L2 probe, must take the replica out
        "health": {"fall": 50, "l2_timeout_s": 5.0},
    }
    with cluster(tmp_path, 2, sections=sections) as c:
        c.sims[1].admin("faults", {"hang": 1.0})
        slow = 0
        with c.client(timeout=10.0) as client:
            for i in range(40):
                t0 = time.monotonic()
                reply = chat(client, f"hang test {i}")
                took = time.monotonic() - t0
                assert reply.choices[0].message.content
                # at most one per-try timeout, then a fast answer from the healthy replica
                assert took < 2 * per_try, f"request {i} took {took:.2f}s"
                if took >= per_try * 0.9:
                    slow += 1
                if c.replica("r1")["breaker"]["state"] != "closed":
                    break
        breaker = c.replica("r1")["breaker"]
        assert breaker["state"] in ("open", "half_open"), breaker
        assert breaker["last_failure_class"] == "timeout"
        assert slow == 2, f"{slow} requests waited for the per-try timeout, expected 2"
        metrics = c.metrics()
        assert (
            metric_sum(
                metrics, "hanode_upstream_failures_total", replica="r1", failure_class="timeout"
            )
            == 2
        )
        assert (
            metric_sum(
                metrics,
                "hanode_breaker_transitions_total",
                replica="r1",
                failure_class="timeout",
                to_state="open",
            )
            == 1
        )
        assert metric_sum(metrics, "hanode_upstream_failures_total", replica="r0") == 0
        # while open, the hanging replica gets nothing: every request is fast
        with c.client(timeout=10.0) as client:
            for i in range(5):
                t0 = time.monotonic()
                chat(client, f"after open {i}")
                assert time.monotonic() - t0 < per_try * 0.9


# -- 3. repeated OOMs ----------------------------------------------------------------------------
def test_repeated_oom_cuts_weight_then_trips_breaker(tmp_path: Path) -> None:
    trip = 3
    sections = {
        "breaker": {"oom_trip_count": trip, "oom_window_s": 30.0, "open_base_s": 30.0},
        "health": {"fall": 50},
    }
    with cluster(tmp_path, 2, sections=sections) as c:
        c.sims[1].admin("faults", {"oom": 1.0})
        factor_after_first: float | None = None
        opened_after: float | None = None
        with c.client() as client:
            for i in range(300):
                reply = chat(client, f"oom test {i}")
                assert reply.choices[0].message.content
                assert reply.model == MODEL
                r1 = c.replica("r1")
                ooms = metric_sum(
                    c.metrics(),
                    "hanode_upstream_failures_total",
                    replica="r1",
                    failure_class="gpu_oom",
                )
                if ooms >= 1 and factor_after_first is None:
                    factor_after_first = r1["breaker"]["weight_factor"]
                if r1["breaker"]["state"] != "closed":
                    opened_after = ooms
                    break
                assert ooms < trip, f"breaker still closed after {ooms:g} OOMs"
        assert opened_after == trip, f"breaker opened after {opened_after} OOMs, want {trip}"
        # the first OOM cut the replica's weight before any trip
        assert factor_after_first is not None and factor_after_first < 1.0
        r1 = c.replica("r1")
        assert r1["breaker"]["state"] == "open"
        assert r1["breaker"]["last_failure_class"] == "gpu_oom"
        metrics = c.metrics()
        assert (
            metric_sum(
                metrics,
                "hanode_breaker_transitions_total",
                replica="r1",
                failure_class="gpu_oom",
                to_state="open",
            )
            == 1
        )
        assert metric_sum(metrics, "hanode_retries_total", failure_class="gpu_oom") == trip
        assert metric_sum(metrics, "hanode_breaker_transitions_total", replica="r0") == 0
        # while open the OOM replica gets nothing, so nothing is retried any more
        before = c.chat_counts()
        with c.client() as client:
            for i in range(20):
                assert chat(client, f"while open {i}").choices[0].message.content
        assert c.chat_counts() == [before[0] + 20, before[1]]
        assert metric_sum(c.metrics(), "hanode_retries_total") == trip


# -- 4. 429 with Retry-After -------------------------------------------------------------------
def test_rate_limit_pauses_for_retry_after_and_resumes(tmp_path: Path) -> None:
    sim_args = (*FAST_SIM, "--retry-after-s", "1")
    with cluster(tmp_path, 1, sim_args=sim_args) as c:
        sim = c.sims[0]
        states: list[tuple[str, str]] = []

        def watch() -> None:
            r = c.replica("r0")
            states.append((r["health"], r["breaker"]["state"]))

        sim.admin("faults", {"ratelimit": 1.0})
        with c.client() as client:
            with pytest.raises(openai.RateLimitError) as info:
                chat(client, "rate limited")
            t_429 = time.monotonic()
            assert info.value.status_code == 429
            assert info.value.response.headers.get("retry-after") == "1"
            watch()
            sim.admin("faults", {"clear": True})
            tries_at_429 = c.chat_counts()[0]
            resumed_at: float | None = None
            paused_answers = 0
            deadline = t_429 + 5.0
            while time.monotonic() < deadline:
                try:
                    reply = chat(client, "after the pause")
                except openai.RateLimitError as exc:
                    # paused: refused at the door with the wait left, replica untouched
                    assert exc.code == "rate_limit_exceeded", exc.body
                    assert exc.response.headers.get("retry-after") == "1", exc.response.headers
                    paused_answers += 1
                    watch()
                    time.sleep(0.05)
                    continue
                assert reply.choices[0].message.content
                resumed_at = time.monotonic()
                break
        assert resumed_at is not None, "traffic did not resume after the Retry-After pause"
        assert paused_answers >= 5, f"only {paused_answers} answers during the pause"
        waited = resumed_at - t_429
        assert 0.8 <= waited <= 2.0, f"resumed after {waited:.2f}s, Retry-After was 1s"
        # during the pause the replica saw nothing; after it, exactly the one that succeeded
        assert c.chat_counts()[0] == tries_at_429 + 1
        watch()
        assert all(h == "healthy" for h, _ in states), states
        assert all(b != "open" for _, b in states), states
        metrics = c.metrics()
        assert metric_sum(metrics, "hanode_breaker_transitions_total", replica="r0") == 0
        assert (
            metric_sum(
                metrics,
                "hanode_upstream_failures_total",
                replica="r0",
                failure_class="rate_limited",
            )
            == 1
        )


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
    with cluster(tmp_path, 2) as c:
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
        assert "GPU memory 96%" in r1["reason"], r1
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
            raw, _, _ = _read_to_close(held[0], time.monotonic(), 5.0)
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
