"""End-to-end: the simulator's vLLM sleep mode (``/sleep``, ``/wake_up``, ``/is_sleeping``) and
its cold start (``--load-s``), driven with HTTP and the official OpenAI client.

vLLM (V1) behaviour it mirrors (vllm/entrypoints/serve/sleep/api_router.py, v1/engine/core.py):
both POSTs answer 200 with an empty body once done; a sleeping engine keeps answering /health
and /v1/models, and holds generation requests until it is woken (its scheduler is paused).
"""

from __future__ import annotations

import json
import threading
import time

import openai
import pytest

from tests.support.procs import SimProcess, http_get, start_sim, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def is_sleeping(sim: SimProcess) -> bool:
    status, _, body = sim.get("/is_sleeping")
    assert status == 200
    value = json.loads(body)["is_sleeping"]
    assert isinstance(value, bool)
    return value


def test_sleep_frees_gpu_memory_holds_requests_and_wake_up_serves_them() -> None:
    with start_sim(
        "--ttft-ms", "0", "--tpot-ms", "0", "--sleep-s", "0.2", "--wake-s", "0.5"
    ) as sim:
        client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0, timeout=10)
        awake_gpu = sim.admin("state")["gpu_mem"]
        assert not is_sleeping(sim)
        status, _, body = sim.post("/sleep?level=1", None)
        assert (status, body) == (200, b"")  # answered once asleep
        assert is_sleeping(sim)
        state = sim.admin("state")
        assert state["sleeping"] and state["gpu_mem"] < 0.1 < awake_gpu
        page = sim.get("/metrics")[2].decode()
        assert 'sleep_state="weights_offloaded"} 1' in page
        assert 'sleep_state="awake"} 0' in page
        # Still answering what needs no weights.
        assert sim.get("/health")[0] == 200
        assert client.models.list().data[0].id == "sim-model"
        # A completion while asleep is held, not refused, and not answered ...
        result: dict[str, object] = {}

        def ask() -> None:
            try:
                out = client.completions.create(model="sim-model", prompt="hi", max_tokens=3)
                result["text"] = out.choices[0].text
            except Exception as exc:  # reported below
                result["error"] = exc

        asker = threading.Thread(target=ask)
        asker.start()
        wait_until(lambda: sim.admin("state")["per_endpoint"].get("/v1/completions", 0) >= 1, 5)
        asker.join(0.3)
        assert asker.is_alive() and not result
        # ... until the wake: the held request is then served.
        started = time.monotonic()
        status, _, body = sim.post("/wake_up", None)
        took = time.monotonic() - started
        assert (status, body) == (200, b"")
        assert took >= 0.4  # --wake-s 0.5: answered once awake (a lower bound, never an upper)
        assert not is_sleeping(sim)
        asker.join(10)
        assert "error" not in result and result.get("text")
        assert sim.admin("state")["gpu_mem"] == awake_gpu


def test_sleep_and_wake_are_idempotent_and_level_is_checked() -> None:
    with start_sim("--sleep-s", "0", "--wake-s", "0") as sim:
        assert sim.post("/wake_up", None)[0] == 200  # awake already: nothing to do
        assert sim.post("/sleep", None)[0] == 200  # level 1 by default
        assert sim.post("/sleep?level=1", None)[0] == 200
        assert is_sleeping(sim)
        assert sim.post("/sleep?level=7", None)[0] == 400
        assert sim.post("/wake_up", None)[0] == 200
        assert sim.post("/wake_up", None)[0] == 200
        assert not is_sleeping(sim)
        assert sim.post("/sleep?level=2", None)[0] == 200
        assert 'sleep_state="discard_all"} 1' in sim.get("/metrics")[2].decode()


def test_sleep_aborts_requests_in_flight() -> None:
    with start_sim("--ttft-ms", "3000", "--sleep-s", "0") as sim:
        client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="x", max_retries=0, timeout=10)
        errors: list[Exception] = []

        def ask() -> None:
            try:
                client.completions.create(model="sim-model", prompt="hi", max_tokens=2)
            except Exception as exc:
                errors.append(exc)

        asker = threading.Thread(target=ask)
        asker.start()
        wait_until(lambda: sim.admin("state")["running"] == 1, 5)
        assert sim.post("/sleep", None)[0] == 200
        asker.join(10)
        assert len(errors) == 1 and isinstance(errors[0], openai.APIConnectionError)


def test_cold_start_refuses_then_answers_503_then_serves() -> None:
    with start_sim("--load-s", "4", wait="none") as sim:

        def health() -> int:
            try:
                return http_get(f"{sim.url}/health", timeout=0.5)[0]
            except OSError:
                return 0

        assert health() == 0  # refused: weights loading, no HTTP server yet (first 3 s)
        wait_until(lambda: health() == 503, 10)  # server up, engine warming (last 1 s)
        wait_until(lambda: health() == 200, 10)
