"""Failover for each target: one of three simulators SIGKILLed under mixed load, and what the
clients saw through nginx, vllm-router, LiteLLM and each hanode variant.

Each target gets three fresh simulators (tpot 1 ms, so streams and requests are in flight at
the kill) and is the only proxy over them. One asyncio client keeps ``streams`` streamed chat
completions (``stream_tokens`` chunks each) and ``requests`` non-streamed completions going
back to back, without retries of its own; ``kill_at_s`` into the run simulator 2 is killed by
its pid. Counted, by what the client got (:mod:`bench.sse`): requests and streams complete,
errors (an exception or non-200 status), truncated streams (a 200 that stopped short or ended
without ``[DONE]``) and errors that still happen more than ``settle_s`` after the kill (a proxy
that keeps sending to the dead replica).
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import llm_routers
from bench.harness import HOST, BenchError, ProcGroup, failure_line, free_port, say
from bench.nginx import Nginx
from bench.sse import StreamOutcome, StreamTally, classify
from bench.sse_client import KeepAlive
from bench.targets import HANODE_VARIANTS, LITELLM, MODEL, VLLM_ROUTER, Extras, start_node
from bench.venvs import Installed

ORDER = ("nginx", VLLM_ROUTER, LITELLM, *HANODE_VARIANTS)


@dataclass(frozen=True, slots=True)
class FailoverSettings:
    duration_s: float = 10.0
    kill_at_s: float = 3.0
    settle_s: float = 1.0
    streams: int = 4  # concurrent streamed clients
    requests: int = 4  # concurrent non-streamed clients
    stream_tokens: int = 50
    tpot_ms: float = 1.0


QUICK = FailoverSettings(duration_s=4.0, kill_at_s=1.3)


@dataclass(slots=True)
class TargetFailover:
    name: str
    requests: Counter[str] = field(default_factory=Counter)  # kind -> count
    streams: Counter[str] = field(default_factory=Counter)
    late_errors: int = 0  # errors (and truncations) starting settle_s after the kill
    kill_at: float = 0.0
    error: str = ""  # the target could not be run

    @property
    def request_errors(self) -> int:
        return sum(v for k, v in self.requests.items() if k != "ok")

    @property
    def stream_errors(self) -> int:
        return sum(v for k, v in self.streams.items() if k not in ("ok", "truncated"))

    @property
    def truncated(self) -> int:
        return self.streams.get("truncated", 0)


def _request(port: int, stream: bool, tokens: int, headers: dict[str, str]) -> bytes:
    if stream:
        path = "/v1/chat/completions"
        doc: dict[str, object] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Keep streaming."}],
            "max_tokens": tokens,
            "stream": True,
        }
    else:
        path = "/v1/completions"
        doc = {"model": MODEL, "prompt": "Say hello to the benchmark.", "max_tokens": 16}
    body = json.dumps(doc, separators=(",", ":")).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
    return (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n%s"
        b"Content-Length: %d\r\n\r\n%s"
        % (path.encode(), HOST.encode(), port, extra, len(body), body)
    )


def request_outcome(tally: StreamTally, error: BaseException | None) -> StreamOutcome:
    """A non-streamed request: ok only when a 200 arrived whole."""
    if tally.status is None:
        return StreamOutcome(type(error).__name__ if error else "no answer", 0)
    if tally.status != 200:
        return StreamOutcome(f"HTTP {tally.status}", 0)
    return StreamOutcome("ok" if tally.finished else "cut body", 0)


async def _client(
    port: int,
    stream: bool,
    settings: FailoverSettings,
    headers: dict[str, str],
    stop_at: float,
    out: list[tuple[float, bool, StreamOutcome]],
) -> None:
    loop = asyncio.get_running_loop()
    request = _request(port, stream, settings.stream_tokens, headers)
    conn = KeepAlive(port)
    while loop.time() < stop_at:
        t0 = loop.time()
        tally, error = await conn.exchange(request, lambda: 10.0)
        if stream:
            outcome = classify(tally, settings.stream_tokens, error)
        else:
            outcome = request_outcome(tally, error)
        out.append((t0, stream, outcome))
        if error is not None:
            await asyncio.sleep(0.01)  # a refused connection must not spin
    await conn.close()


async def _load(
    port: int, headers: dict[str, str], settings: FailoverSettings, kill: Callable[[], None]
) -> tuple[float, list[tuple[float, bool, StreamOutcome]]]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    out: list[tuple[float, bool, StreamOutcome]] = []
    loop.call_later(settings.kill_at_s, kill)
    stop_at = t0 + settings.duration_s
    await asyncio.gather(
        *(_client(port, True, settings, headers, stop_at, out) for _ in range(settings.streams)),
        *(_client(port, False, settings, headers, stop_at, out) for _ in range(settings.requests)),
    )
    return t0, out


def _start_target(
    group: ProcGroup, tmp: Path, name: str, urls: list[str], nginx_binary: str, extras: Extras
) -> tuple[int, dict[str, str]]:
    if name == "nginx":
        proxy = Nginx(
            nginx_binary, tmp / "nginx", free_port(), [int(u.rsplit(":", 1)[1]) for u in urls]
        )
        proxy.start(group)
        return proxy.port, {}
    if name == VLLM_ROUTER and isinstance(extras.vllm_router, Installed):
        _, port = llm_routers.start_vllm_router(group, extras.vllm_router, name, urls, MODEL)
        return port, {}
    if name == LITELLM and isinstance(extras.litellm, Installed):
        _, port, headers = llm_routers.start_litellm(group, extras.litellm, name, tmp, urls, MODEL)
        return port, headers
    if name in HANODE_VARIANTS:
        return start_node(group, tmp, name, urls).router_port, {}
    raise BenchError("not installed")


def run_target(
    name: str, tmp: Path, nginx_binary: str, extras: Extras, settings: FailoverSettings
) -> TargetFailover:
    """Fresh simulators, ``name`` alone in front of them, the kill under load."""
    result = TargetFailover(name)
    tmp.mkdir(parents=True, exist_ok=True)
    args = ["--model", MODEL, "--ttft-ms", "0", "--tpot-ms", str(settings.tpot_ms)]
    args += ["--capacity", "1024"]
    with ProcGroup(tmp) as group:
        try:
            sims = [group.sim(f"sim{i}", *args) for i in range(3)]
            port, headers = _start_target(
                group, tmp, name, [s.url for s in sims], nginx_binary, extras
            )
        except (BenchError, TimeoutError, RuntimeError, OSError) as exc:
            result.error = failure_line(exc)
            return result
        victim = sims[2]
        t0, samples = asyncio.run(
            _load(port, headers, settings, lambda: victim.kill(signal.SIGKILL))
        )
    result.kill_at = settings.kill_at_s
    late = t0 + settings.kill_at_s + settings.settle_s
    for started, stream, outcome in samples:
        (result.streams if stream else result.requests)[outcome.kind] += 1
        if not outcome.ok and started >= late:
            result.late_errors += 1
    say(
        f"failover {name}: requests {dict(result.requests)}, streams {dict(result.streams)}, "
        f"{result.late_errors} errors later than {settings.settle_s:.0f} s after the kill"
    )
    return result


def run(
    tmp: Path, nginx_binary: str, extras: Extras, settings: FailoverSettings, names: list[str]
) -> dict[str, TargetFailover]:
    """:func:`run_target` for each of ``names`` in turn (one set of processes at a time)."""
    out: dict[str, TargetFailover] = {}
    for name in sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        out[name] = run_target(name, tmp / f"failover-{name}", nginx_binary, extras, settings)
    return out
