"""End-to-end against real engines: upstream llama.cpp ``llama-server`` replicas behind a node.

Three ``llama-server`` processes serve the same random-weight 2-layer llama (written at test
time, < 1 MB) and a ``hanode run`` node fronts them with ``engine = "llamacpp"``. Traffic goes
through the official ``openai`` client. What this shows that the simulator cannot: the real
engine's /health, /metrics names and error bodies are what the llama.cpp adapter expects, and
routing, failover and health hold with a real engine behind them.

The binary comes from ``make llama-server`` (``scripts/build_llama_server.sh``, cached under
``~/.cache/hanode``); without it every test here fails and says how to build it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import E2EProcs, metric_sum, raw_request
from tests.e2e.llamacpp_support import (
    ALIAS,
    SLOW_ARGS,
    SLOW_CTX,
    LlamaServer,
    llama_server_binary,
    slow_model,
    tiny_model,
)
from tests.support.procs import NodeProcess, free_port, http_get, http_request, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

PROMPT = "Hello world, say something"
MESSAGES = [{"role": "user", "content": "Say hello to the world"}]
QUEUE_LIMIT = 2  # L3 queue-depth limit of the shared cluster


@dataclass
class LlamaCluster:
    node: NodeProcess
    servers: list[LlamaServer]
    names: list[str]
    procs: E2EProcs

    def openai(self, timeout: float = 20.0) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.node.router_url + "/v1", api_key="x", max_retries=0, timeout=timeout
        )

    def replicas(self) -> dict[str, dict[str, Any]]:
        return self.node.replicas()

    def wait_health(self, wanted: str | dict[str, str], timeout: float = 20.0) -> None:
        if isinstance(wanted, str):
            wanted = dict.fromkeys(self.names, wanted)
        self.node.wait_health(wanted, timeout)


def direct(server: LlamaServer, timeout: float = 20.0) -> openai.OpenAI:
    """A client that talks to one replica directly, bypassing hanode."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=timeout)


def start_servers(procs: E2EProcs, n: int, **opts: Any) -> list[LlamaServer]:
    model = tiny_model()
    servers = []
    for _ in range(n):
        server = LlamaServer(model, log_path=procs._log("llama-server"), **opts)
        procs.started.append(server)
        servers.append(server)
    for server in servers:
        server.wait_ready(30.0)
    return servers


def front(
    procs: E2EProcs,
    servers: list[LlamaServer],
    sections: dict[str, dict[str, Any]] | None = None,
    name: str = "n1",
    wait_healthy: bool = True,
) -> LlamaCluster:
    names = [f"r{i}" for i in range(len(servers))]
    replicas = [
        {"name": n, "model": ALIAS, "url": s.url, "engine": "llamacpp"}
        for n, s in zip(names, servers, strict=True)
    ]
    node, _ = procs.node(replicas, sections, name=name)
    cluster = LlamaCluster(node, servers, names, procs)
    if wait_healthy:
        cluster.wait_health("healthy", 30.0)
    return cluster


@contextlib.contextmanager
def tracked(procs: E2EProcs, request: pytest.FixtureRequest) -> Iterator[E2EProcs]:
    failed_before = request.session.testsfailed
    try:
        yield procs
    finally:
        if request.session.testsfailed > failed_before:
            print(procs.outputs())
        procs.stop_all()


@pytest.fixture(scope="module")
def llama(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaCluster]:
    """Three tiny-model llama-servers behind one node, shared by the non-destructive tests."""
    llama_server_binary()  # fail first, and loudly, when the binary is missing
    with tracked(E2EProcs(tmp_path_factory.mktemp("llamacpp")), request) as procs:
        servers = start_servers(procs, 3)
        yield front(procs, servers, {"thresholds": {"queue_depth": QUEUE_LIMIT}})


@pytest.fixture
def own_procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[E2EProcs]:
    llama_server_binary()
    with tracked(E2EProcs(tmp_path), request) as procs:
        yield procs


def sse_events(body: bytes) -> list[str]:
    return [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]


# -- 1. the OpenAI API, end to end ---------------------------------------------------------------
def test_completions_and_chat_streaming_and_not(llama: LlamaCluster) -> None:
    client = llama.openai()
    models = [m.id for m in client.models.list().data]
    assert models == [ALIAS], models

    raw = client.completions.with_raw_response.create(
        model=ALIAS, prompt=PROMPT, max_tokens=8, temperature=0
    )
    assert raw.headers.get("x-hanode-replica") in llama.names, dict(raw.headers)
    out = raw.parse()
    assert out.choices[0].text.strip(), out
    assert out.choices[0].finish_reason == "length", out  # the model never emits EOS
    assert out.usage is not None and out.usage.completion_tokens == 8, out.usage

    chat = client.chat.completions.create(
        model=ALIAS, messages=MESSAGES, max_tokens=8, temperature=0
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content and chat.choices[0].message.content.strip(), chat
    assert chat.usage is not None and chat.usage.completion_tokens == 8, chat.usage

    pieces = [
        c.choices[0].text
        for c in client.completions.create(
            model=ALIAS, prompt=PROMPT, max_tokens=8, temperature=0, stream=True
        )
        if c.choices
    ]
    assert "".join(pieces) == out.choices[0].text  # greedy: streamed == whole
    deltas = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=ALIAS, messages=MESSAGES, max_tokens=8, temperature=0, stream=True
        )
        if c.choices
    ]
    assert "".join(deltas) == chat.choices[0].message.content

    # The raw stream relayed by hanode is llama-server's SSE, ending with [DONE].
    for path, body in [
        ("/v1/completions", {"prompt": PROMPT}),
        ("/v1/chat/completions", {"messages": MESSAGES}),
    ]:
        body |= {"model": ALIAS, "max_tokens": 4, "stream": True, "temperature": 0}
        status, headers, data = http_request("POST", llama.node.router_url + path, body, 20.0)
        assert status == 200, data
        assert headers["content-type"].startswith("text/event-stream"), headers
        events = sse_events(data)
        assert events[-1] == "[DONE]", events
        assert all(json.loads(e)["object"] for e in events[:-1]), events


# -- 2. health layers and metrics from the real endpoints ----------------------------------------
def test_health_and_weights_come_from_real_llamacpp_endpoints(llama: LlamaCluster) -> None:
    for server in llama.servers:
        status, body = server.health()
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        code, _, page = http_get(server.url + "/metrics")
        text = page.decode()
        assert code == 200
        for name in ("llamacpp:requests_processing", "llamacpp:requests_deferred"):
            assert f"\n{name} " in text, f"{name} missing from llama-server /metrics:\n{text}"
        assert metric_sum(text, "llamacpp:tokens_predicted_total") > 0  # L2 probes generated

    # L1 (/health 200), L2 (test prompt answered with text) and L3 (metrics in range): healthy,
    # with the queue read from llamacpp:requests_deferred. This build has no KV-usage metric.
    for name, rep in llama.replicas().items():
        assert rep["engine"] == "llamacpp"
        assert rep["health"] == "healthy", rep
        assert rep["weight"] > 0, rep
        assert rep["queue_depth"] == 0.0, rep
        assert rep["kv_usage"] is None, rep
        assert rep["breaker"]["state"] == "closed", (name, rep)

    # Flood r0 directly: 4 slots busy, the rest deferred. hanode must read the deferred queue
    # from the real metrics page: L3 out of range (queue limit 2 here), weight cut by the queue.
    busy = llama.servers[0]
    stop = threading.Event()

    def hammer() -> int:
        n = 0
        with direct(busy, timeout=30.0) as client:
            while not stop.is_set():
                client.completions.create(
                    model=ALIAS, prompt=f"{PROMPT} {n}", max_tokens=300, temperature=0
                )
                n += 1
        return n

    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(hammer) for _ in range(12)]
        try:

            def queued() -> dict[str, Any] | None:
                r0 = llama.replicas()["r0"]
                ok = r0["health"] == "degraded" and (r0["queue_depth"] or 0) > QUEUE_LIMIT
                return r0 if ok else None

            r0 = wait_until(queued, 20.0, 0.1, lambda: f"r0 queue seen: {llama.replicas()}")
            assert r0["reason"].startswith("L3: ") and "queue" in r0["reason"], r0
            # weight = 1 / (1 + queue / 16) at most (latency can only lower it further)
            assert 0 < r0["weight"] <= 1 / (1 + r0["queue_depth"] / 16) + 1e-3, r0
            page = http_get(busy.url + "/metrics", 5.0)[2].decode()
            assert metric_sum(page, "llamacpp:requests_processing") >= 1, page
        finally:
            stop.set()
            done = [f.result(timeout=60) for f in futures]
    assert sum(done) >= 12

    def drained() -> dict[str, Any] | None:
        r0 = llama.replicas()["r0"]
        return r0 if r0["queue_depth"] == 0.0 and r0["health"] == "healthy" else None

    wait_until(drained, 20.0, 0.1, lambda: f"r0 healthy again: {llama.replicas()}")


# -- 3. determinism across replicas --------------------------------------------------------------
def test_greedy_output_is_identical_through_every_replica(llama: LlamaCluster) -> None:
    prompt = "The old man and the sea"
    kw: dict[str, Any] = {"model": ALIAS, "max_tokens": 12, "temperature": 0}
    direct_text = []
    direct_chat = []
    for server in llama.servers:
        with direct(server) as client:
            direct_text.append(client.completions.create(prompt=prompt, **kw).choices[0].text)
            reply = client.chat.completions.create(messages=MESSAGES, **kw)
            direct_chat.append(reply.choices[0].message.content)
    assert direct_text[0].strip() and direct_chat[0], (direct_text, direct_chat)
    assert len(set(direct_text)) == 1, direct_text
    assert len(set(direct_chat)) == 1, direct_chat

    # Through hanode, until every replica has answered at least twice.
    client = llama.openai()
    seen: Counter[str] = Counter()
    for _ in range(60):
        raw = client.completions.with_raw_response.create(prompt=prompt, **kw)
        replica = raw.headers["x-hanode-replica"]
        assert raw.parse().choices[0].text == direct_text[0], replica
        raw_chat = client.chat.completions.with_raw_response.create(messages=MESSAGES, **kw)
        assert raw_chat.parse().choices[0].message.content == direct_chat[0]
        seen[replica] += 1
        seen[raw_chat.headers["x-hanode-replica"]] += 1
        if len(seen) == 3 and min(seen.values()) >= 2:
            break
    assert set(seen) == set(llama.names) and min(seen.values()) >= 2, seen


# -- 4. context overflow -------------------------------------------------------------------------
def test_context_overflow_is_openai_context_length_exceeded(llama: LlamaCluster) -> None:
    long_prompt = "hello " * 5000  # ~5000 tokens: more than -c 4096, whatever the slot split
    status, _, body = http_request(
        "POST",
        llama.servers[1].url + "/v1/completions",
        {"model": ALIAS, "prompt": long_prompt, "max_tokens": 4},
        20.0,
    )
    err = json.loads(body)["error"]
    assert (status, err["type"], err["code"]) == (400, "exceed_context_size_error", 400), body
    assert err["n_prompt_tokens"] > err["n_ctx"], err

    client = llama.openai()
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=ALIAS, prompt=long_prompt, max_tokens=4)
    assert exc.value.status_code == 400
    assert exc.value.code == "context_length_exceeded", exc.value.body
    assert exc.value.param == "prompt", exc.value.body
    assert "context" in exc.value.message, exc.value.message

    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": long_prompt}], max_tokens=4
        )
    assert exc.value.code == "context_length_exceeded", exc.value.body
    assert exc.value.param == "messages", exc.value.body

    # The request's fault: no retry, no breaker, every replica still healthy and serving.
    metrics = llama.node.metrics_text()
    ctx = {"failure_class": "context_length"}
    assert metric_sum(metrics, "hanode_upstream_failures_total", **ctx) >= 2
    assert metric_sum(metrics, "hanode_retries_total", **ctx) == 0
    for rep in llama.replicas().values():
        assert rep["health"] == "healthy" and rep["breaker"]["state"] == "closed", rep
    ok = client.completions.create(model=ALIAS, prompt=PROMPT, max_tokens=2, temperature=0)
    assert ok.choices[0].text


# -- 5. a loading replica ------------------------------------------------------------------------
def test_loading_replica_gets_no_traffic_until_ready(
    llama: LlamaCluster, own_procs: E2EProcs
) -> None:
    # r3 is configured but not started yet (refused): the node serves from r0..r2.
    port = free_port()
    model = slow_model()  # written before the clock matters (cached after the first run)
    replicas = [*llama.servers]
    names = ["r0", "r1", "r2", "r3"]
    urls = [*(s.url for s in replicas), f"http://127.0.0.1:{port}"]
    node, _ = own_procs.node(
        [
            {"name": n, "model": ALIAS, "url": u, "engine": "llamacpp"}
            for n, u in zip(names, urls, strict=True)
        ],
        name="n2",
    )
    c = LlamaCluster(node, replicas, names, own_procs)
    c.wait_health({"r0": "healthy", "r1": "healthy", "r2": "healthy", "r3": "down"}, 20.0)

    # Now r3's process starts with a big model: it listens at once and answers 503 while loading.
    slow = LlamaServer(
        model, port=port, ctx=SLOW_CTX, extra=SLOW_ARGS, log_path=own_procs._log("llama-slow")
    )
    own_procs.started.append(slow)
    slow.wait_http(30.0)
    status, body = slow.health()
    if status == 200:
        pytest.fail("the big model loaded before the test could see it loading")
    assert status == 503, body
    assert json.loads(body)["error"] == {
        "code": 503,
        "message": "Loading model",
        "type": "unavailable_error",
    }
    code, _, body = raw_request("GET", slow.url + "/v1/models")  # every endpoint says the same
    assert code == 503 and b"Loading model" in body, (code, body)

    client = c.openai()
    served: Counter[str] = Counter()
    reasons: set[str] = set()
    while slow.health()[0] != 200:
        r3 = c.replicas()["r3"]
        assert r3["health"] == "down" and r3["weight"] == 0.0, r3
        reasons.add(r3["reason"])
        raw = client.completions.with_raw_response.create(
            model=ALIAS, prompt=PROMPT, max_tokens=2, temperature=0
        )
        assert raw.parse().choices[0].text
        served[raw.headers["x-hanode-replica"]] += 1
    assert served["r3"] == 0, served
    assert sum(served.values()) >= 5, f"loading ended before the test saw traffic: {served}"
    assert any("503" in r for r in reasons), reasons  # the node saw "loading", not "refused"

    c.wait_health("healthy", 30.0)  # L1 now 200, and L2 proves the big model answers
    # The big model is slower per token than its tiny peers (its engine's generation counters
    # say so), so it serves at a low weight: its share is small but never zero.
    assert c.replicas()["r3"]["weight"] > 0.0
    for _ in range(1000):  # bounded; stops at r3's first answer
        raw = client.completions.with_raw_response.create(
            model=ALIAS, prompt=PROMPT, max_tokens=2, temperature=0
        )
        served[raw.headers["x-hanode-replica"]] += 1
        if served["r3"]:
            break
    assert served["r3"] > 0, served


# -- 6. SIGKILL under load -----------------------------------------------------------------------
def test_sigkill_of_a_replica_under_load_fails_no_request(own_procs: E2EProcs) -> None:
    servers = start_servers(own_procs, 3)
    c = front(own_procs, servers)
    stop = threading.Event()
    errors: list[str] = []
    served: list[tuple[float, str]] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        with c.openai(timeout=20.0) as client:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    raw = client.chat.completions.with_raw_response.create(
                        model=ALIAS,
                        messages=[{"role": "user", "content": f"worker {k} request {i}"}],
                        max_tokens=24,
                        temperature=0,
                    )
                    text = raw.parse().choices[0].message.content
                    if not text:
                        raise AssertionError("empty completion")
                    with lock:
                        served.append((time.monotonic(), raw.headers["x-hanode-replica"]))
                except Exception as exc:
                    with lock:
                        errors.append(f"worker {k} request {i}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(6)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len({r for _, r in served}) == 3, 15.0, message="traffic on all 3")
        victim = servers[1]
        victim.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait_exit(5.0)
        c.wait_health({"r1": "down"}, 10.0)
        time.sleep(1.0)  # keep loading the survivors after the node has noticed
    finally:
        stop.set()
        for t in threads:
            t.join(30.0)
    assert not errors, errors[:5]
    assert not any(t.is_alive() for t in threads)
    before = Counter(r for t, r in served if t < killed_at)
    after = Counter(r for t, r in served if t > killed_at + 0.5)
    assert before["r1"] > 0, before
    assert after["r1"] == 0 and after["r0"] > 0 and after["r2"] > 0, after
    reps = c.replicas()
    assert reps["r1"]["breaker"]["state"] != "closed" or reps["r1"]["health"] == "down", reps
    assert reps["r0"]["health"] == reps["r2"]["health"] == "healthy", reps
