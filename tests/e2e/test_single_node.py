"""End-to-end: one ``hanode run`` node in front of real ``hanode sim`` replicas.

Every test starts its own processes (see ``conftest.py``), drives traffic through the node with
the official OpenAI client (or raw HTTP where exact bytes matter) and checks what the node
reports on its ops port (/status, /metrics). Waits are bounded everywhere.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import E2EProcs, metric_sum, raw_request
from tests.support.procs import http_get, http_request, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

MODEL = "sim-model"
FAST = ["--ttft-ms", "5", "--tpot-ms", "1"]
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
KINDS = ("technical", "functional", "quality")


def ask(client: openai.OpenAI, model: str = MODEL, max_tokens: int = 2) -> str:
    """One chat completion that must succeed with output; returns the replica that served it."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, max_tokens=max_tokens
    )
    out = raw.parse()
    assert out.choices[0].message.content, out
    replica = raw.headers.get("x-hanode-replica")
    assert replica, dict(raw.headers)
    return replica


def spread(client: openai.OpenAI, n: int, model: str = MODEL) -> Counter[str]:
    return Counter(ask(client, model) for _ in range(n))


def reaches_all(client: openai.OpenAI, names: list[str], limit: int = 60) -> set[str]:
    """Send until every replica has answered once (bounded; a miss has odds below 1e-9)."""
    seen: set[str] = set()
    for _ in range(limit):
        seen.add(ask(client))
        if seen >= set(names):
            break
    return seen


def error_of(status: int, headers: dict[str, str], body: bytes, want: int) -> dict[str, Any]:
    """Check an OpenAI-style error response and return its ``error`` object."""
    assert status == want, (status, body)
    assert headers.get("content-type", "").startswith("application/json"), headers
    err = json.loads(body)["error"]
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    assert "param" in err and "code" in err, err
    return dict(err)


# -- 1. weights --------------------------------------------------------------------------------
def test_slow_replica_gets_less_traffic_but_stays_in_pool(e2e_procs: E2EProcs) -> None:
    # r2 answers ~6x slower than its peers: its TTFT (the engine's figure: these answers are
    # not streamed) and time per token are judged against theirs.
    c = e2e_procs.cluster(
        [["--ttft-ms", "20", "--tpot-ms", "0"]] * 2 + [["--ttft-ms", "120", "--tpot-ms", "0"]],
    )
    fast, slow = c.names[:2], c.names[2]
    client = c.openai()
    warm = spread(client, 24)  # equal weights before any latency is known
    assert warm[slow] > 0, warm

    def weighed() -> dict[str, dict[str, Any]] | None:
        reps = c.replicas()
        ok = reps[slow]["health"] == "degraded" and reps[slow]["weight"] < 0.5
        return reps if ok and all(reps[f]["weight"] > 0.8 for f in fast) else None

    reps = wait_until(weighed, timeout=10, message=lambda: f"slow replica weighed: {c.replicas()}")
    assert 0.0 < reps[slow]["weight"] < 0.5
    assert reps[slow]["latency_ms"] > max(reps[f]["latency_ms"] for f in fast)
    assert "> pool" in reps[slow]["reason"]

    served = spread(client, 80)
    assert sum(served.values()) == 80
    # expected shares with weights ~1, 1, ~0.2: ~36, ~36, ~8
    assert 0 < served[slow] < 0.5 * min(served[f] for f in fast), served

    # slowness lowers weight, it never removes the replica
    after = c.replicas()[slow]
    assert after["health"] in ("degraded", "healthy"), after
    assert after["weight"] > 0.0, after
    assert after["breaker"]["state"] == "closed", after


# -- 2. L1 failure and return ------------------------------------------------------------------
def test_dead_replica_leaves_pool_and_returns_when_restarted(e2e_procs: E2EProcs) -> None:
    # a long open period: a restarted replica must not wait for it (its breaker starts afresh)
    c = e2e_procs.cluster([FAST] * 3, sections={"breaker": {"open_base_s": 30.0}})
    victim, others = c.names[1], {c.names[0], c.names[2]}
    client = c.openai()
    assert reaches_all(client, c.names) == set(c.names)

    c.sims[1].kill()  # SIGKILL: no goodbye
    c.sims[1].wait_exit()
    # before the health checker notices, failover keeps requests succeeding
    early = spread(client, 8)
    assert victim not in early, early

    c.wait_health({victim: "down"}, timeout=5)
    reps = c.replicas()
    assert reps[victim]["weight"] == 0.0, reps[victim]
    assert reps[victim]["reason"].startswith("L1"), reps[victim]
    assert all(reps[o]["health"] == "healthy" for o in others), reps
    served = spread(client, 30)
    assert set(served) == others, served

    c.restart_sim(1, *FAST)
    c.wait_health({victim: "healthy"}, timeout=10)
    assert c.replicas()[victim]["weight"] > 0.0

    def victim_served() -> bool:
        return victim in spread(client, 10)

    # the breaker opened when a try was refused; back from DOWN, the replica starts afresh
    wait_until(victim_served, timeout=5, message="restarted replica gets traffic")


# -- 3. loading replica ------------------------------------------------------------------------
def test_loading_replica_gets_nothing_until_ready(e2e_procs: E2EProcs) -> None:
    ready = e2e_procs.sim("--model", MODEL, *FAST)
    loading = e2e_procs.sim(
        "--model", MODEL, *FAST, "--refuse-s", "1", "--loading-s", "4", wait="none"
    )
    c = e2e_procs.front([ready, loading], wait_healthy=False)
    c.wait_health({"r0": "healthy"}, timeout=10)
    client = c.openai()

    served = spread(client, 15)
    rep = c.replicas()["r1"]
    # still loading after the batch: refused or 503 on /health
    try:
        still_loading = loading.get("/health", timeout=1.0)[0] == 503
    except OSError:
        still_loading = True
    assert still_loading, "simulator finished loading too early; the check above proves nothing"
    assert served == Counter({"r0": 15}), served
    assert rep["health"] in ("down", "unready"), rep
    assert rep["weight"] == 0.0, rep

    c.wait_health({"r1": "healthy"}, timeout=10)
    later = spread(client, 40)
    assert later["r1"] > 0, later
    assert later["r0"] > 0, later


# -- 4. streaming ------------------------------------------------------------------------------
def test_streaming_arrives_chunk_by_chunk(e2e_procs: E2EProcs) -> None:
    c = e2e_procs.cluster([["--ttft-ms", "20", "--tpot-ms", "100"]])
    client = c.openai(timeout=10)
    before = metric_sum(c.node.metrics_text(), "hanode_request_success_total", kind="functional")

    def timed(stream: Any, text_of: Any) -> tuple[list[float], list[str], str | None, int]:
        stamps: list[float] = []
        texts: list[str] = []
        finish: str | None = None
        chunks = 0
        for chunk in stream:
            chunks += 1
            for choice in chunk.choices:
                text = text_of(choice)
                if text:
                    stamps.append(time.monotonic())
                    texts.append(text)
                if choice.finish_reason:
                    finish = choice.finish_reason
        return stamps, texts, finish, chunks

    chat = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=10, stream=True
    )
    stamps, texts, finish, chunks = timed(chat, lambda ch: ch.delta.content)
    assert len(texts) == 10, texts
    assert chunks == 12, chunks  # role chunk + 10 tokens + the finish chunk
    assert finish == "length"
    assert stamps[-1] - stamps[0] >= 0.5, stamps  # ~0.9 s apart: not buffered
    # tokens arrive spread out, not in one lump at the end
    assert sum(1 for t in stamps if t - stamps[0] < 0.45) <= 6, [t - stamps[0] for t in stamps]

    comp = client.completions.create(model=MODEL, prompt="count", max_tokens=10, stream=True)
    stamps, texts, finish, chunks = timed(comp, lambda ch: ch.text)
    assert len(texts) == 10, texts
    assert chunks == 11, chunks  # 10 tokens + the finish chunk
    assert finish == "length"
    assert stamps[-1] - stamps[0] >= 0.5, stamps

    # both streams reached [DONE] and had output: functional successes at the node
    after = metric_sum(c.node.metrics_text(), "hanode_request_success_total", kind="functional")
    assert after - before == 2


# -- 5. bad input ------------------------------------------------------------------------------
def test_bad_requests_get_openai_style_errors(e2e_procs: E2EProcs) -> None:
    c = e2e_procs.cluster([FAST], sections={"router": {"max_body_bytes": 2048}})
    client = c.openai()
    chat_url = c.node.router_url + "/v1/chat/completions"
    comp_url = c.node.router_url + "/v1/completions"
    chats_before = c.sims[0].admin("state")["per_endpoint"].get("/v1/chat/completions", 0)

    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert nf.value.status_code == 404
    assert "no-such-model" in nf.value.message
    assert isinstance(nf.value.body, dict) and nf.value.body.get("code") == "model_not_found"

    err = error_of(*raw_request("POST", chat_url, b'{"model": "sim-model", "messages": ['), 400)
    assert "JSON" in err["message"]
    err = error_of(*raw_request("POST", chat_url, b""), 400)
    assert "empty" in err["message"]
    err = error_of(*raw_request("POST", chat_url, b"[1, 2]"), 400)
    assert "object" in err["message"]

    err = error_of(*http_request("POST", chat_url, {"messages": MESSAGES}), 400)
    assert err["param"] == "model" and "'model'" in err["message"]
    err = error_of(*http_request("POST", chat_url, {"model": MODEL}), 400)
    assert err["param"] == "messages" and "'messages'" in err["message"]
    err = error_of(*http_request("POST", comp_url, {"model": MODEL}), 400)
    assert err["param"] == "prompt" and "'prompt'" in err["message"]
    err = error_of(*http_request("POST", chat_url, {"model": MODEL, "messages": "hi"}), 400)
    assert err["param"] == "messages"
    err = error_of(
        *http_request("POST", comp_url, {"model": MODEL, "prompt": "x", "stream": "yes"}), 400
    )
    assert err["param"] == "stream"
    err = error_of(*http_request("POST", comp_url, {"model": MODEL, "prompt": "x", "n": 0}), 400)
    assert err["param"] == "n"
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens="x")  # type: ignore[call-overload]
    assert isinstance(br.value.body, dict) and br.value.body.get("param") == "max_tokens"
    assert "max_tokens" in br.value.message and "integer" in br.value.message

    big = json.dumps({"model": MODEL, "prompt": "word " * 1000}).encode()
    err = error_of(*raw_request("POST", comp_url, big), 413)
    assert "2048" in err["message"]
    with pytest.raises(openai.APIStatusError) as too_big:
        client.completions.create(model=MODEL, prompt="word " * 1000)
    assert too_big.value.status_code == 413

    err = error_of(*http_get(chat_url), 405)
    assert "POST" in err["message"]
    err = error_of(*http_request("POST", c.node.router_url + "/v1/models", {}), 405)
    assert "GET" in err["message"]
    err = error_of(*http_get(c.node.router_url + "/v1/no-such-path"), 404)
    assert "/v1/no-such-path" in err["message"]
    err = error_of(*http_request("POST", c.node.router_url + "/v2/chat", {}), 404)

    # none of it cost the replica anything; a good request still works
    chats_after = c.sims[0].admin("state")["per_endpoint"].get("/v1/chat/completions", 0)
    assert chats_after == chats_before
    assert ask(client) == "r0"


def test_no_healthy_replica_is_a_fast_503_with_retry_after(e2e_procs: E2EProcs) -> None:
    c = e2e_procs.cluster([FAST] * 2)
    client = c.openai(timeout=10)
    assert reaches_all(client, c.names) == set(c.names)
    for sim in c.sims:
        sim.kill()
    for sim in c.sims:
        sim.wait_exit()

    # right away (health not updated yet): failover finds nothing, answers fast, never hangs
    t0 = time.monotonic()
    with pytest.raises(openai.APIStatusError) as early:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
    assert time.monotonic() - t0 < 2.0
    assert early.value.status_code in (502, 503), early.value

    c.wait_health("down", timeout=5)
    for _ in range(3):
        t0 = time.monotonic()
        with pytest.raises(openai.InternalServerError) as none:
            client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
        assert time.monotonic() - t0 < 2.0
        assert none.value.status_code == 503
        assert int(none.value.response.headers["retry-after"]) >= 1
        assert MODEL in none.value.message
    status, headers, body = http_request(
        "POST", c.node.router_url + "/v1/completions", {"model": MODEL, "prompt": "x"}
    )
    error_of(status, headers, body, 503)
    assert "retry-after" in headers
    assert metric_sum(c.node.metrics_text(), "hanode_no_replica_total", model=MODEL) >= 4
    assert client.models.list().data == []


# -- 6. the three success kinds ----------------------------------------------------------------
def test_success_kinds_are_counted(e2e_procs: E2EProcs) -> None:
    c = e2e_procs.cluster([FAST] * 2, sections={"slo": {"latency_ms": 200}})
    client = c.openai()

    def counts() -> dict[str, float]:
        text = c.node.metrics_text()
        out = {
            k: metric_sum(text, "hanode_request_success_total", model=MODEL, kind=k) for k in KINDS
        }
        out["status200"] = metric_sum(text, "hanode_requests_total", model=MODEL, status="200")
        out["all"] = metric_sum(text, "hanode_requests_total", model=MODEL)
        return out

    def delta(before: dict[str, float]) -> dict[str, float]:
        now = counts()
        return {k: now[k] - before[k] for k in now}

    def on_all_sims(path: str, body: dict[str, Any]) -> None:
        for sim in c.sims:
            sim.admin(path, body)

    # normal answers: all three kinds
    before = counts()
    ask(client)
    ask(client)
    assert client.completions.create(model=MODEL, prompt="x", max_tokens=3).choices[0].text
    assert delta(before) == dict.fromkeys((*KINDS, "status200", "all"), 3.0)

    # empty answer: 200 OK, but useless
    on_all_sims("faults", {"empty": 1.0})
    before = counts()
    out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
    d = delta(before)
    on_all_sims("faults", {"clear": True})
    assert not out.choices[0].message.content
    assert d == {"technical": 1, "functional": 0, "quality": 0, "status200": 1, "all": 1}

    # slow answer beyond the 200 ms SLO: usable, but not quality
    on_all_sims("config", {"ttft_ms": 350})
    before = counts()
    t0 = time.monotonic()
    ask(client)
    assert time.monotonic() - t0 >= 0.3
    d = delta(before)
    on_all_sims("config", {"ttft_ms": 5})
    assert d == {"technical": 1, "functional": 1, "quality": 0, "status200": 1, "all": 1}

    # stream cut by the replica mid-way, on every replica: continued until the limit, then
    # ended with an error event (the client raises): not a functional success
    on_all_sims("faults", {"stream-death": 1.0})
    before = counts()
    received: list[str] = []
    with pytest.raises(openai.APIError, match="stream_continuation_limit"):
        for chunk in client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=8, stream=True
        ):
            received.extend(ch.delta.content or "" for ch in chunk.choices)
    d = delta(before)
    on_all_sims("faults", {"clear": True})
    assert 0 < len([r for r in received if r]) < 8, received
    assert d["all"] == 1, d
    assert d["functional"] == 0 and d["quality"] == 0, d


# -- 7. /v1/models -----------------------------------------------------------------------------
def test_models_lists_only_models_with_a_healthy_replica(e2e_procs: E2EProcs) -> None:
    c = e2e_procs.cluster([FAST, FAST], models=["alpha", "beta"])
    client = c.openai()
    assert sorted(m.id for m in client.models.list().data) == ["alpha", "beta"]
    assert ask(client, "beta") == "r1"

    c.sims[1].kill()

    def listed() -> list[str] | None:
        ids = sorted(m.id for m in client.models.list().data)
        return ids if ids == ["alpha"] else None

    wait_until(listed, timeout=5, message="beta gone from /v1/models")
    assert c.health()["r1"] == "down"
    assert ask(client, "alpha") == "r0"
    with pytest.raises(openai.InternalServerError) as gone:  # configured, nobody serving
        client.chat.completions.create(model="beta", messages=MESSAGES, max_tokens=2)
    assert gone.value.status_code == 503

    c.restart_sim(1, *FAST)
    wait_until(
        lambda: sorted(m.id for m in client.models.list().data) == ["alpha", "beta"],
        timeout=10,
        message="beta back in /v1/models",
    )


# -- 8. API keys -------------------------------------------------------------------------------
def test_api_key_is_required(e2e_procs: E2EProcs) -> None:
    c = e2e_procs.cluster([FAST], sections={"router": {"api_keys": ["secret-16-chars!"]}})
    base = c.node.router_url
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2}

    err = error_of(*http_request("POST", base + "/v1/chat/completions", body), 401)
    assert err["code"] == "invalid_api_key"
    error_of(*http_get(base + "/v1/models"), 401)
    with pytest.raises(openai.AuthenticationError):
        c.openai(api_key="wrong").chat.completions.create(model=MODEL, messages=MESSAGES)
    with pytest.raises(openai.AuthenticationError) as no_key:  # no Authorization header at all
        c.openai().models.list(extra_headers={"Authorization": openai.Omit()})
    assert no_key.value.status_code == 401

    good = c.openai(api_key="secret-16-chars!")
    assert ask(good) == "r0"
    assert [m.id for m in good.models.list().data] == [MODEL]
    status, _, _ = http_request(
        "POST",
        base + "/v1/chat/completions",
        body,
        headers={"authorization": "Bearer secret-16-chars!"},
    )
    assert status == 200
