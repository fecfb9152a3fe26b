"""HTTP routing of the simulator: health, models, generations, metrics, admin drills."""

from __future__ import annotations

import asyncio
import hmac
import os
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from hanode.http.request import Request
from hanode.http.responder import Responder
from hanode.sim.engine_state import EngineState
from hanode.sim.faults import FAULT_KINDS, LEAK_STEP, FaultRates
from hanode.sim.generation import Generator, Job, Timing
from hanode.sim.metrics_page import SimMetrics, render
from hanode.sim.options import SimOptions
from hanode.sim.shapes import (
    ApiError,
    bad_request,
    busy_error,
    context_error,
    loading_error,
    method_not_allowed,
    not_found,
    oom_error,
    rate_limit_error,
    unauthorized,
)
from hanode.sim.sleep_mode import SLEEP_GPU_MEM, Phase, SleepMode
from hanode.sim.validate import GenRequest, parse_generation

HANG_LIMIT_S = 600.0  # a hung request is cut after this, so nothing waits forever
CRASH_DELAY_S = 0.02  # /admin/crash: let the reply leave before the process dies

Route = Callable[[Request, Responder], None]


def _exit_now() -> None:
    os._exit(1)


class SimApp:
    """State of one simulated replica and its request handler (``handle``)."""

    def __init__(self, options: SimOptions, loop: asyncio.AbstractEventLoop) -> None:
        self.options = options
        self.loop = loop
        self.model = options.model
        self.ready_at = loop.time() + options.loading_s if options.loading_s > 0 else 0.0
        self.created = int(time.time())
        self.faults = FaultRates(random.Random(options.seed), options.faults)
        self.engine: EngineState[Job] = EngineState(
            options.capacity, options.gpu_mem_base, options.reserve_gpu
        )
        self.metrics = SimMetrics()
        self.timing = Timing(options.ttft_ms, options.tpot_ms, options.slow_factor)
        self.retry_after_s = options.retry_after_s
        self.gen = Generator(loop, self.model, self.engine, self.metrics, self.timing)
        self.sleep_mode = SleepMode(loop, options.sleep_s, options.wake_s)
        self._auth = b"Bearer " + options.api_key.encode() if options.api_key else None
        self.requests_total = 0
        self.per_endpoint: dict[str, int] = {}
        self.request_ids: deque[str] = deque(maxlen=256)  # x-request-id of recent generations
        self.faults_injected: dict[str, int] = {}
        self._hangs: set[asyncio.TimerHandle] = set()
        self._routes: dict[bytes, dict[bytes, Route]] = {
            b"/health": {b"GET": self._health},
            b"/v1/models": {b"GET": self._models},
            b"/v1/completions": {b"POST": self._completions},
            b"/v1/chat/completions": {b"POST": self._chat},
            b"/metrics": {b"GET": self._metrics},
            b"/admin/state": {b"GET": self._admin_state},
            b"/admin/faults": {b"POST": self._admin_faults, b"GET": self._admin_get_faults},
            b"/admin/gpu": {b"POST": self._admin_gpu},
            b"/admin/crash": {b"POST": self._admin_crash},
            b"/admin/config": {b"POST": self._admin_config},
            # vLLM's sleep mode (dev-mode endpoints: VLLM_SERVER_DEV_MODE=1)
            b"/sleep": {b"POST": self._sleep},
            b"/wake_up": {b"POST": self._wake_up},
            b"/is_sleeping": {b"GET": self._is_sleeping},
            # vLLM's dev-mode RPC to its workers; the simulator knows "reload_weights"
            b"/collective_rpc": {b"POST": self._collective_rpc},
        }
        self.weight_reloads = 0

    # -- entry point -------------------------------------------------------------------------
    def handle(self, request: Request, responder: Responder) -> None:
        path = request.path
        if b"?" in path:
            path = path.split(b"?", 1)[0]
        self.requests_total += 1
        methods = self._routes.get(path)
        key = path.decode("latin-1") if methods is not None else "other"
        self.per_endpoint[key] = self.per_endpoint.get(key, 0) + 1
        try:
            if methods is None:
                raise not_found()
            route = methods.get(request.method)
            if route is None:
                if request.method == b"HEAD" and b"GET" in methods:
                    route = methods[b"GET"]
                else:
                    raise method_not_allowed()
            route(request, responder)
        except ApiError as err:
            responder.send(err.status, err.body, extra_headers=err.extra_headers)

    @property
    def loading(self) -> bool:
        if self.ready_at and self.loop.time() < self.ready_at:
            return True
        self.ready_at = 0.0
        return False

    def shutdown(self) -> None:
        self.gen.shutdown()
        self.sleep_mode.shutdown()
        for timer in self._hangs:
            timer.cancel()
        self._hangs.clear()

    # -- engine routes -----------------------------------------------------------------------
    def _health(self, request: Request, responder: Responder) -> None:
        if self.loading:
            raise loading_error()
        responder.send(200, b"", b"text/plain")

    def _check_v1(self, request: Request) -> None:
        if self.loading:
            raise loading_error()
        if self._auth is not None:
            got = request.headers.get(b"authorization")
            if got is None or not hmac.compare_digest(got, self._auth):
                raise unauthorized()

    def _models(self, request: Request, responder: Responder) -> None:
        self._check_v1(request)
        body = {
            "object": "list",
            "data": [
                {
                    "id": self.model,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "hanode-sim",
                    "root": self.model,
                    "parent": None,
                    "max_model_len": self.options.max_model_len,
                }
            ],
        }
        responder.send(200, orjson.dumps(body))

    def _completions(self, request: Request, responder: Responder) -> None:
        self._generate(request, responder, chat=False)

    def _chat(self, request: Request, responder: Responder) -> None:
        self._generate(request, responder, chat=True)

    def _generate(self, request: Request, responder: Responder, chat: bool) -> None:
        self._check_v1(request)
        request_id = request.headers.get(b"x-request-id")
        if request_id:  # what a real engine logs with the request (vLLM: X-Request-Id)
            self.request_ids.append(request_id.decode(errors="replace"))
        req = parse_generation(request.body, chat, self.model, self.options.max_model_len)
        if self.sleep_mode.holds_requests:
            self._hold(req, responder)
            return
        self._generate_now(req, responder)

    def _generate_now(self, req: GenRequest, responder: Responder) -> None:
        fault = self.faults.decide()
        if fault.any:
            self._count_faults(
                fault.terminal,
                fault.stream_death,
                fault.stream_stall,
                fault.empty,
                fault.slow,
                fault.leak,
            )
            if fault.leak:
                self.engine.leaked = min(1.0, self.engine.leaked + LEAK_STEP)
            terminal = fault.terminal
            if terminal is not None:
                self._terminal_fault(terminal, req.prompt_tokens[0], req.max_tokens, responder)
                return
        self.gen.submit(req, responder, fault)

    def _count_faults(self, terminal: str | None, *flags: bool) -> None:
        names = [terminal] if terminal is not None else []
        kinds = ("stream-death", "stream-stall", "empty", "slow", "leak")
        names += [k for k, f in zip(kinds, flags, strict=True) if f]
        for name in names:
            self.faults_injected[name] = self.faults_injected.get(name, 0) + 1

    def _terminal_fault(
        self, kind: str, prompt_tokens: int, max_tokens: int, responder: Responder
    ) -> None:
        if kind == "crash":
            _exit_now()
        if kind == "hang":
            self._hang(responder)
            return
        if kind == "oom":
            raise oom_error()
        if kind == "context":
            max_len = self.options.max_model_len
            raise context_error(max_len, max(prompt_tokens, max_len), max_tokens)
        if kind == "ratelimit":
            raise rate_limit_error(self.retry_after_s)
        raise busy_error()

    def _hang(self, responder: Responder) -> None:
        timer = self.loop.call_later(HANG_LIMIT_S, responder.abort)
        self._hangs.add(timer)

        def gone() -> None:
            timer.cancel()
            self._hangs.discard(timer)

        responder.on_abort(gone)

    def _metrics(self, request: Request, responder: Responder) -> None:
        e = self.engine
        body = render(
            self.model,
            self.metrics,
            e.running,
            e.waiting,
            e.kv_usage,
            self.gpu_mem,
            reserve=e.reserve,
        )
        responder.send(200, body + self._sleep_gauge(), b"text/plain; version=0.0.4; charset=utf-8")

    # -- sleep mode (see hanode.sim.sleep_mode) ----------------------------------------------
    @property
    def gpu_mem(self) -> float:
        return SLEEP_GPU_MEM if self.sleep_mode.gpu_freed else self.engine.gpu_mem

    def _sleep_gauge(self) -> bytes:
        level = self.sleep_mode.level if self.sleep_mode.is_sleeping else 0
        lbl = f'model_name="{self.model}",engine="0"'
        lines = ["# TYPE vllm:engine_sleep_state gauge"]
        for state, value in (("awake", level == 0), ("weights_offloaded", level == 1),
                             ("discard_all", level == 2)):  # fmt: skip
            lines.append(f'vllm:engine_sleep_state{{{lbl},sleep_state="{state}"}} {int(value)}')
        return ("\n".join(lines) + "\n").encode()

    def _hold(self, req: GenRequest, responder: Responder) -> None:
        def resume() -> None:
            if responder.done:
                return
            try:
                self._generate_now(req, responder)
            except ApiError as err:
                responder.send(err.status, err.body, extra_headers=err.extra_headers)

        responder.on_abort(self.sleep_mode.hold(resume))

    def _sleep(self, request: Request, responder: Responder) -> None:
        query = request.path.partition(b"?")[2].decode("latin-1")
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        level = params.get("level", "1")
        if level not in ("0", "1", "2"):
            raise bad_request(f"level must be 0, 1 or 2, got {level!r}")
        if self.sleep_mode.phase is Phase.AWAKE and int(level) > 0:
            for job in list(self.gen.jobs):  # vLLM's mode=abort: requests in flight end
                job.responder.abort()
        self.sleep_mode.sleep(int(level), lambda: responder.send(200, b"", b"text/plain"))

    def _wake_up(self, request: Request, responder: Responder) -> None:
        self.sleep_mode.wake(lambda: responder.send(200, b"", b"text/plain"))

    def _is_sleeping(self, request: Request, responder: Responder) -> None:
        responder.send(200, orjson.dumps({"is_sleeping": self.sleep_mode.is_sleeping}))

    def _collective_rpc(self, request: Request, responder: Responder) -> None:
        """``{"method": "reload_weights"}``: the weights are read again (it takes ``wake_s``;
        requests wait meanwhile like vLLM's, the answer comes once done)."""
        method = self._json_object(request).get("method")
        if method != "reload_weights":
            raise bad_request(f"collective_rpc: the simulator knows reload_weights, not {method!r}")

        def done() -> None:
            self._hangs.discard(timer)
            self.weight_reloads += 1
            if not responder.done:
                responder.send(200, orjson.dumps({"results": [None]}))

        timer = self.loop.call_later(self.sleep_mode.wake_s, done)
        self._hangs.add(timer)  # cancelled at shutdown

    # -- admin routes ------------------------------------------------------------------------
    def _json_object(self, request: Request) -> dict[str, Any]:
        try:
            data = orjson.loads(request.body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"Invalid JSON body: {exc}") from None
        if not isinstance(data, dict):
            raise bad_request("request body must be a JSON object")
        return data

    def state(self) -> dict[str, Any]:
        e, m, t = self.engine, self.metrics, self.timing
        return {
            "model": self.model,
            "loading": self.loading,
            "sleeping": self.sleep_mode.is_sleeping,
            "weight_reloads": self.weight_reloads,
            "faults": self.faults.as_dict(),
            "faults_injected": dict(self.faults_injected),
            "running": e.running,
            "peak_running": e.peak_running,
            "waiting": e.waiting,
            "capacity": e.capacity,
            "kv": e.kv_usage,
            "gpu_mem": self.gpu_mem,
            "gpu_mem_override": e.gpu_mem_override,
            "reserve_gpu": e.reserve,
            "kv_override": e.kv_override,
            "leak": e.leaked,
            "ttft_ms": t.ttft_s * 1000.0,
            "tpot_ms": t.tpot_s * 1000.0,
            "slow_factor": t.slow_factor,
            "retry_after_s": self.retry_after_s,
            "requests_total": self.requests_total,
            "requests_served": sum(m.success.values()),
            "prompt_tokens": m.prompt_tokens,
            "generation_tokens": m.generation_tokens,
            "per_endpoint": dict(self.per_endpoint),
            "request_ids": list(self.request_ids),
        }

    def _admin_state(self, request: Request, responder: Responder) -> None:
        responder.send(200, orjson.dumps(self.state()))

    def _admin_get_faults(self, request: Request, responder: Responder) -> None:
        responder.send(200, orjson.dumps({"faults": self.faults.as_dict()}))

    def _admin_faults(self, request: Request, responder: Responder) -> None:
        data = self._json_object(request)
        clear = data.pop("clear", False)
        if not isinstance(clear, bool):
            raise bad_request("clear must be a boolean")
        unknown = sorted(set(data) - set(FAULT_KINDS))
        if unknown:
            raise bad_request(f"unknown faults {unknown}; known: {list(FAULT_KINDS)}")
        rates = {k: (0.0 if v is None else v) for k, v in data.items()}
        try:
            if clear:
                self.faults.clear()
            self.faults.update(rates)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        responder.send(200, orjson.dumps({"faults": self.faults.as_dict()}))

    def _admin_gpu(self, request: Request, responder: Responder) -> None:
        """Drive memory: ``gpu_mem`` (device used, null: back to the model), ``kv`` (KV use,
        null: back to the load), ``leak`` (device memory grown past the reservation)."""
        data = self._json_object(request)
        if not data or not set(data) <= {"gpu_mem", "kv", "leak"}:
            raise bad_request(
                'expected some of {"gpu_mem": 0..1 or null, "kv": 0..1 or null, "leak": 0..1}'
            )
        for key, value in data.items():
            if (value is None and key != "leak") or (
                not isinstance(value, bool) and isinstance(value, int | float) and 0 <= value <= 1
            ):
                continue
            raise bad_request(f"{key} must be within 0..1" + (" or null" if key != "leak" else ""))
        e = self.engine
        if "gpu_mem" in data:
            e.gpu_mem_override = None if data["gpu_mem"] is None else float(data["gpu_mem"])
        if "kv" in data:
            e.kv_override = None if data["kv"] is None else float(data["kv"])
        if "leak" in data:
            e.leaked = float(data["leak"])
        answer = {"gpu_mem": self.gpu_mem, "kv": e.kv_usage, "leak": e.leaked}
        responder.send(200, orjson.dumps(answer))

    def _admin_crash(self, request: Request, responder: Responder) -> None:
        responder.send(200, b'{"crashing":true}')
        self.loop.call_later(CRASH_DELAY_S, _exit_now)

    def _admin_config(self, request: Request, responder: Responder) -> None:
        data = self._json_object(request)
        known = {"ttft_ms", "tpot_ms", "slow_factor", "retry_after_s", "capacity"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise bad_request(f"unknown settings {unknown}; known: {sorted(known)}")
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise bad_request(f"{name} must be a non-negative number")
        if "capacity" in data and (not isinstance(data["capacity"], int) or data["capacity"] < 1):
            raise bad_request("capacity must be an integer >= 1")
        t = self.timing
        if "ttft_ms" in data:
            t.ttft_s = data["ttft_ms"] / 1000.0
        if "tpot_ms" in data:
            t.tpot_s = data["tpot_ms"] / 1000.0
        if "slow_factor" in data:
            t.slow_factor = float(data["slow_factor"])
        if "retry_after_s" in data:
            self.retry_after_s = float(data["retry_after_s"])
        if "capacity" in data:
            for job in self.engine.set_capacity(data["capacity"]):
                job.start()
        responder.send(200, orjson.dumps(self.state()))
