"""End-to-end: real ``hanode sim`` processes driven by the official OpenAI client."""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.procs import SimProcess, free_port, http_get, start_sim, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

MODEL = "sim-model"


def client(sim: SimProcess, timeout: float = 10.0, api_key: str = "x") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim.url}/v1", api_key=api_key, max_retries=0, timeout=timeout)


def metric(text: str, name: str, **labels: str) -> float:
    """Value of one sample in a Prometheus text page (labels must match as a subset)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(f"{name}{labels} not in metrics page")


@pytest.fixture(scope="module")
def fast_sim() -> Iterator[SimProcess]:
    with start_sim("--ttft-ms", "0", "--tpot-ms", "0", "--seed", "1") as sim:
        yield sim
        assert sim.stop() == 0  # SIGTERM: clean exit


@pytest.fixture
def sim(fast_sim: SimProcess) -> Iterator[SimProcess]:
    fast_sim.admin("faults", {"clear": True})
    fast_sim.admin("config", {"ttft_ms": 0, "tpot_ms": 0, "slow_factor": 10})
    yield fast_sim
    fast_sim.admin("faults", {"clear": True})


@pytest.fixture(scope="module")
def paced_sim() -> Iterator[SimProcess]:
    # --reserve-gpu 0: device memory grows with KV use (an engine that allocates as it goes)
    with start_sim(
        "--ttft-ms", "20", "--tpot-ms", "50", "--capacity", "2", "--reserve-gpu", "0"
    ) as sim:
        yield sim


# -- the happy path ------------------------------------------------------------------------------
def test_models_list(sim: SimProcess) -> None:
    models = client(sim).models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert models.data[0].owned_by == "hanode-sim"
    assert (models.data[0].model_extra or {})["max_model_len"] == 4096


def test_completion_and_chat_with_usage(sim: SimProcess) -> None:
    c = client(sim)
    out = c.completions.create(model=MODEL, prompt="one two three", max_tokens=5)
    assert len(out.choices) == 1
    assert len(out.choices[0].text.split()) == 5
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (3, 5)
    assert out.usage.total_tokens == 8

    chat = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}], max_tokens=7
    )
    msg = chat.choices[0].message
    assert msg.role == "assistant" and msg.content is not None
    assert len(msg.content.split()) == 7
    assert chat.usage is not None
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (2 + 4, 7)

    many = c.completions.create(model=MODEL, prompt="x", max_tokens=3, n=3, seed=5)
    assert [ch.index for ch in many.choices] == [0, 1, 2]
    assert many.usage is not None and many.usage.completion_tokens == 9


def test_same_seed_same_text_across_processes(sim: SimProcess) -> None:
    with start_sim("--ttft-ms", "0", "--tpot-ms", "0", "--seed", "99") as other:

        def text(s: SimProcess, **kw: Any) -> str:
            out = client(s).completions.create(
                model=MODEL, prompt="tell me a story", max_tokens=12, **kw
            )
            return str(out.choices[0].text)

        assert text(sim, seed=7) == text(other, seed=7)
        assert text(sim, seed=7) != text(sim, seed=8)
        assert text(sim, temperature=0) == text(other, temperature=0)
        chat = [{"role": "user", "content": "hi"}]
        a = client(sim).chat.completions.create(model=MODEL, messages=chat, seed=3)  # type: ignore[arg-type]
        b = client(other).chat.completions.create(model=MODEL, messages=chat, seed=3)  # type: ignore[arg-type]
        assert a.choices[0].message.content == b.choices[0].message.content
        # no seed and temperature > 0: random
        randoms = {text(sim, temperature=1.0) for _ in range(4)}
        assert len(randoms) > 1


def test_streaming_is_paced_and_ends_properly(paced_sim: SimProcess) -> None:
    c = client(paced_sim)
    t0 = time.monotonic()
    stream = c.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream please"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals: list[float] = []
    content = ""
    finish = None
    usage = None
    roles = []
    for chunk in stream:
        arrivals.append(time.monotonic() - t0)
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.delta.role:
                roles.append(ch.delta.role)
            content += ch.delta.content or ""
            finish = ch.finish_reason or finish
    assert roles == ["assistant"]
    assert len(content.split()) == 8
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 8 and usage.prompt_tokens == 6
    assert len(arrivals) >= 8
    # 20 ms TTFT then 7 x 50 ms: the first chunk comes long before the last
    assert arrivals[-1] - arrivals[0] >= 0.25, arrivals

    # plain completions stream text deltas that add up to the non-streamed answer
    pieces = [
        ch.choices[0].text
        for ch in c.completions.create(model=MODEL, prompt="a b", max_tokens=4, seed=1, stream=True)
        if ch.choices
    ]
    whole = c.completions.create(model=MODEL, prompt="a b", max_tokens=4, seed=1)
    assert "".join(pieces) == whole.choices[0].text


def test_context_overflow_is_vllm_400(sim: SimProcess) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(sim).completions.create(model=MODEL, prompt="w " * 100, max_tokens=4000)
    assert info.value.status_code == 400
    assert (
        "This model's maximum context length is 4096 tokens. However, you requested 4100 tokens "
        "(100 in the messages, 4000 in the completion). Please reduce the length of the messages "
        "or completion." in str(info.value)
    )


def test_bad_requests(sim: SimProcess) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(sim).completions.create(model="other", prompt="x")
    assert "The model `other` does not exist." in str(info.value)
    status, _, body = sim.post("/v1/completions", {"max_tokens": 3})
    assert status == 400 and b"prompt" in body
    status, _, _ = sim.post("/v1/chat/completions", {"messages": "nope"})
    assert status == 400


# -- faults ----------------------------------------------------------------------------------------
def test_fault_oom(sim: SimProcess) -> None:
    sim.admin("faults", {"oom": 1.0})
    with pytest.raises(openai.InternalServerError) as info:
        client(sim).completions.create(model=MODEL, prompt="x")
    assert info.value.status_code == 500
    assert "CUDA out of memory" in str(info.value)
    assert sim.get("/health")[0] == 200  # like real engines, /health does not notice


def test_fault_ratelimit_has_retry_after(sim: SimProcess) -> None:
    sim.admin("faults", {"ratelimit": 1.0})
    with pytest.raises(openai.RateLimitError) as info:
        client(sim).completions.create(model=MODEL, prompt="x")
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "2"


def test_fault_busy_and_context(sim: SimProcess) -> None:
    sim.admin("faults", {"busy": 1.0})
    with pytest.raises(openai.APIStatusError) as info:
        client(sim).completions.create(model=MODEL, prompt="x")
    assert info.value.status_code == 503
    sim.admin("faults", {"clear": True, "context": 1.0})
    with pytest.raises(openai.BadRequestError) as bad:
        client(sim).completions.create(model=MODEL, prompt="x")
    assert "maximum context length is 4096 tokens" in str(bad.value)


def test_fault_empty(sim: SimProcess) -> None:
    sim.admin("faults", {"empty": 1.0})
    c = client(sim)
    out = c.completions.create(model=MODEL, prompt="x", max_tokens=5)
    assert out.choices[0].text == ""
    assert out.usage is not None and out.usage.completion_tokens == 0
    chunks = list(
        c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert chunks
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == ""


def test_fault_stream_death(sim: SimProcess) -> None:
    sim.admin("config", {"tpot_ms": 5})
    sim.admin("faults", {"stream-death": 1.0})
    c = client(sim, timeout=5)
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in c.completions.create(model=MODEL, prompt="x", max_tokens=16, stream=True):
            received.extend(ch.text for ch in chunk.choices)
    assert 0 < len(received) < 16
    with pytest.raises(openai.APIConnectionError):
        c.completions.create(model=MODEL, prompt="x", max_tokens=4)
    state = sim.admin("state")
    assert state["running"] == 0 and state["faults_injected"]["stream-death"] >= 2


def test_fault_slow(sim: SimProcess) -> None:
    sim.admin("config", {"ttft_ms": 10, "tpot_ms": 0, "slow_factor": 50})
    t0 = time.monotonic()
    client(sim).completions.create(model=MODEL, prompt="x", max_tokens=2)
    fast = time.monotonic() - t0
    sim.admin("faults", {"slow": 1.0})
    t0 = time.monotonic()
    client(sim).completions.create(model=MODEL, prompt="x", max_tokens=2)
    slow = time.monotonic() - t0
    assert slow >= 0.5 and slow > fast + 0.3  # 10 ms TTFT x 50


def test_fault_hang_times_out_and_frees(sim: SimProcess) -> None:
    sim.admin("faults", {"hang": 1.0})
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client(sim, timeout=0.5).completions.create(model=MODEL, prompt="x")
    assert 0.4 < time.monotonic() - t0 < 5
    sim.admin("faults", {"clear": True})
    out = client(sim).completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert len(out.choices[0].text.split()) == 2


def test_fault_crash_exits_process() -> None:
    with start_sim("--ttft-ms", "0", "--fault", "crash=1") as sim:
        with pytest.raises(openai.APIConnectionError):
            client(sim, timeout=5).completions.create(model=MODEL, prompt="x")
        assert sim.wait_exit(10) == 1


def test_admin_crash_replies_then_exits() -> None:
    with start_sim() as sim:
        assert sim.admin("crash", {}) == {"crashing": True}
        assert sim.wait_exit(10) == 1


# -- life cycle, metrics, admin, auth --------------------------------------------------------------
def test_loading_refused_then_503_then_200() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    with start_sim("--refuse-s", "1.0", "--loading-s", "1.0", port=port, wait="none") as sim:
        wait_until(lambda: '"refusing"' in sim.output(), timeout=10, message="refusing")
        with pytest.raises(urllib.error.URLError):
            http_get(f"{url}/health", timeout=1)
        event = sim.wait_listening(10)
        assert event == {"event": "listening", "host": "127.0.0.1", "port": port}
        assert time.monotonic() - t0 >= 0.9
        status, _, body = http_get(f"{url}/health")
        assert status == 503 and b"error" in body
        with pytest.raises(openai.APIStatusError) as info:
            client(sim).models.list()
        assert info.value.status_code == 503
        wait_until(lambda: http_get(f"{url}/health")[0] == 200, timeout=10, message="ready")
        assert time.monotonic() - t0 >= 1.8
        assert client(sim).models.list().data[0].id == MODEL


def test_signals_stop_cleanly() -> None:
    with start_sim("--refuse-s", "30", wait="none") as refusing:
        wait_until(lambda: '"refusing"' in refusing.output(), timeout=10, message="refusing")
        refusing.kill(signal.SIGTERM)
        assert refusing.wait_exit(10) == 0
    with start_sim() as running:
        running.kill(signal.SIGINT)
        assert running.wait_exit(10) == 0


def test_metrics_and_kv_under_load(paced_sim: SimProcess) -> None:
    page = paced_sim.get("/metrics")[2].decode()
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
        "hanode_sim_gpu_memory_usage_perc",
    ):
        assert name + "{" in page, name
    assert metric(page, "vllm:kv_cache_usage_perc", model_name=MODEL) == 0.0
    served_before = metric(page, "vllm:request_success_total", finished_reason="length")

    c = client(paced_sim)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            c.completions.create(model=MODEL, prompt="load", max_tokens=6)  # ~270 ms each
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()

    def saturated() -> str | None:
        text = paced_sim.get("/metrics")[2].decode()
        full = metric(text, "vllm:kv_cache_usage_perc") == 1.0
        return text if full and metric(text, "vllm:num_requests_waiting") >= 1 else None

    busy = wait_until(saturated, timeout=5, interval=0.01, message="kv full and a queue")
    assert metric(busy, "vllm:num_requests_running") == 2
    assert metric(busy, "hanode_sim_gpu_memory_usage_perc") == pytest.approx(0.75)
    for t in threads:
        t.join(10)
    assert not errors
    page = paced_sim.get("/metrics")[2].decode()
    assert metric(page, "vllm:kv_cache_usage_perc") == 0.0
    assert metric(page, "vllm:request_success_total", finished_reason="length") == served_before + 4
    assert metric(page, "vllm:e2e_request_latency_seconds_count") >= 4
    # queued requests waited: some TTFTs are well above the 20 ms TTFT
    assert metric(page, "vllm:time_to_first_token_seconds_bucket", le="0.1") < metric(
        page, "vllm:time_to_first_token_seconds_count"
    )


def test_admin_api(sim: SimProcess) -> None:
    state = sim.admin("state")
    for key in ("faults", "running", "waiting", "kv", "gpu_mem", "requests_served"):
        assert key in state
    assert state["per_endpoint"]["/admin/state"] >= 1
    status, _, _ = sim.post("/admin/faults", {"meteor": 1.0})
    assert status == 400
    status, _, _ = sim.post("/admin/faults", {"oom": 2})
    assert status == 400
    assert sim.admin("faults", {"oom": 0.5, "slow": 1.0})["faults"]["oom"] == 0.5
    assert set(sim.admin("faults", {"clear": True})["faults"].values()) == {0.0}

    assert sim.admin("gpu", {"gpu_mem": 0.96}) == {"gpu_mem": 0.96, "kv": 0.0, "leak": 0.0}
    page = sim.get("/metrics")[2].decode()
    assert metric(page, "hanode_sim_gpu_memory_usage_perc") == 0.96
    # reserving, like vLLM at --gpu-memory-utilization 0.9 (the default)
    assert sim.admin("gpu", {"gpu_mem": None})["gpu_mem"] == 0.9
    assert metric(page, "vllm:cache_config_info") == 1.0
    assert 'gpu_memory_utilization="0.9"' in page
    assert sim.admin("gpu", {"kv": 0.92, "leak": 0.06}) == {
        "gpu_mem": 0.96,
        "kv": 0.92,
        "leak": 0.06,
    }
    page = sim.get("/metrics")[2].decode()
    assert metric(page, "vllm:kv_cache_usage_perc") == 0.92
    assert sim.admin("gpu", {"kv": None, "leak": 0}) == {"gpu_mem": 0.9, "kv": 0.0, "leak": 0.0}
    for bad in ({}, {"kv": 2}, {"leak": None}, {"meteor": 1}):
        assert sim.post("/admin/gpu", bad)[0] == 400, bad

    before = sim.admin("state")["requests_served"]
    client(sim).completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert sim.admin("state")["requests_served"] == before + 1


def test_api_key_enforced() -> None:
    with start_sim("--api-key", "s3cret", "--ttft-ms", "0", "--tpot-ms", "0") as sim:
        with pytest.raises(openai.AuthenticationError) as info:
            client(sim, api_key="wrong").models.list()
        assert info.value.status_code == 401
        with pytest.raises(openai.AuthenticationError):
            client(sim, api_key="wrong").completions.create(model=MODEL, prompt="x")
        assert client(sim, api_key="s3cret").models.list().data[0].id == MODEL
        assert sim.get("/health")[0] == 200
        assert sim.get("/metrics")[0] == 200
