"""Engine sleep mode over HTTP: free the GPU, keep the weights in host memory, wake in seconds.

- vLLM (``--enable-sleep-mode``, and ``VLLM_SERVER_DEV_MODE=1`` for the endpoints):
  ``POST /sleep?level=1`` offloads the weights to CPU memory and drops the KV cache;
  ``POST /wake_up`` brings them back; ``GET /is_sleeping`` -> ``{"is_sleeping": bool}``. Both
  POSTs answer 200 once the engine has done it. While asleep vLLM holds new requests until it
  is woken (and aborts those in flight when it falls asleep).
- SGLang (``--enable-memory-saver``, with ``--enable-weights-cpu-backup`` so the weights come
  back from host memory; without it they must be reloaded, e.g. ``/update_weights_from_disk``):
  ``POST /release_memory_occupation`` and ``POST /resume_memory_occupation``. SGLang has no
  "is sleeping" endpoint: the supervisor remembers what it asked for.

After a wake one short warm-up prompt goes through before traffic does: the first request
after a wake is markedly slower on vLLM (CUDA graphs, allocator), and better the probe's.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from hanode.actuators.base import ActuatorError
from hanode.engines.base import EngineAdapter
from hanode.http.client import HttpClientError, request

SLEEP_ENGINES = ("vllm", "sglang")


@dataclass(frozen=True, slots=True)
class SleepCalls:
    """The HTTP calls of one engine's sleep mode."""

    sleep: tuple[str, bytes | None]
    wake: tuple[str, bytes | None]
    is_sleeping: str | None


_CALLS = {
    "vllm": SleepCalls(("/sleep?level=1", None), ("/wake_up", None), "/is_sleeping"),
    "sglang": SleepCalls(
        ("/release_memory_occupation", b"{}"), ("/resume_memory_occupation", b"{}"), None
    ),
}


class EngineSleep:
    """Sleep, wake and warm up one replica's engine (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        engine: str,
        adapter: EngineAdapter,
        model: str,
        timeout_s: float = 120.0,
        warm_up_prompt: str = "Say OK.",
        warm_up_max_tokens: int = 4,
    ) -> None:
        if engine not in _CALLS:
            raise ValueError(f"engine {engine!r} has no sleep mode hanode knows")
        self.url = url
        self.calls = _CALLS[engine]
        self.adapter = adapter
        self.model = model
        self.timeout_s = timeout_s
        self.prompt = warm_up_prompt
        self.max_tokens = warm_up_max_tokens

    async def _post(self, call: tuple[str, bytes | None], what: str) -> None:
        path, body = call
        try:
            resp = await request("POST", self.url + path, body=body, timeout=self.timeout_s)
        except HttpClientError as exc:
            raise ActuatorError(f"{what}: {exc}") from None
        if resp.status != 200:
            raise ActuatorError(f"{what}: {path.split('?')[0]} answered HTTP {resp.status}")

    async def sleep(self) -> None:
        await self._post(self.calls.sleep, "sleep")

    async def wake(self) -> None:
        await self._post(self.calls.wake, "wake")

    async def is_sleeping(self) -> bool | None:
        path = self.calls.is_sleeping
        if path is None:
            return None
        try:
            resp = await request("GET", self.url + path, timeout=min(self.timeout_s, 5.0))
            value = orjson.loads(resp.body).get("is_sleeping") if resp.status == 200 else None
        except (HttpClientError, orjson.JSONDecodeError, AttributeError):
            return None
        return value if isinstance(value, bool) else None

    async def warm_up(self) -> bool:
        path, body = self.adapter.l2_request(self.model, self.prompt, self.max_tokens)
        try:
            resp = await request("POST", self.url + path, body=body, timeout=self.timeout_s)
        except HttpClientError:
            return False
        return resp.status == 200
