"""An engine's own weight reload over HTTP, for ``reload = "engine"`` replicas (rolling
reloads without a restart: the process, its CUDA graphs and its port stay).

- vLLM (dev mode: ``VLLM_SERVER_DEV_MODE=1``): ``POST /collective_rpc`` with
  ``{"method": "reload_weights"}`` runs the workers' ``reload_weights`` (the weights are read
  again from the model's path); it answers 200 once every worker is done.
- SGLang: ``POST /update_weights_from_disk`` with ``{"model_path": MODEL}`` loads the
  weights from that path in place; the answer says ``{"success": bool, "message": ...}``.

Like the sleep endpoints these have no authentication: keep the engine's port off the public
network (docs/security.md).
"""

from __future__ import annotations

import orjson

from hanode.actuators.base import ActuatorError
from hanode.http.client import HttpClientError, request

RELOAD_ENGINES = ("vllm", "sglang")


class EngineReload:
    """One replica's engine reload call."""

    def __init__(self, url: str, engine: str, model: str, timeout_s: float = 600.0) -> None:
        if engine not in RELOAD_ENGINES:
            raise ValueError(f"engine {engine!r} has no reload call hanode knows")
        self.url = url
        self.engine = engine
        self.model = model
        self.timeout_s = timeout_s

    def call(self) -> tuple[str, bytes]:
        """The request: path and JSON body."""
        if self.engine == "vllm":
            return "/collective_rpc", orjson.dumps({"method": "reload_weights"})
        return "/update_weights_from_disk", orjson.dumps({"model_path": self.model})

    async def reload(self) -> None:
        path, body = self.call()
        try:
            resp = await request(
                "POST",
                self.url + path,
                body=body,
                headers={"content-type": "application/json"},
                timeout=self.timeout_s,
            )
        except HttpClientError as exc:
            raise ActuatorError(f"engine reload: {exc}") from None
        if resp.status != 200:
            raise ActuatorError(f"engine reload: {path} answered HTTP {resp.status}")
        if self.engine == "sglang":
            try:
                ok = orjson.loads(resp.body).get("success", True)
            except (orjson.JSONDecodeError, AttributeError):
                ok = True
            if ok is False:
                raise ActuatorError("engine reload: SGLang said it did not update the weights")
