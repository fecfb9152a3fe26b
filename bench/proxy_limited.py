"""Proxy-limited: upstreams so fast that the proxy is the bottleneck, to show each proxy's own
ceiling, and what hanode gains from a second worker.

The upstreams are one nginx (:class:`bench.nginx.CannedNginx`, one worker) answering every
completion on three ports with a canned body a simulator wrote (a few µs each), its health
paths passed to one simulator so every proxy's health checks see a real engine. In front of
the three ports: nginx as a proxy (one worker, as in the main table), vllm-router, and hanode
with ``[router] workers`` 1, 2 and "auto". ``wrk -c64`` per target, rounds interleaved, the
proxy's CPU (hanode: the node process and its workers) per request. LiteLLM is left out: at
~20 ms of CPU a request its ceiling is the main table's c=64 figure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench import llm_routers, wrk
from bench.harness import (
    BenchError,
    ProcGroup,
    descendants,
    failure_line,
    free_port,
    say,
    tree_cpu_seconds,
)
from bench.nginx import CannedNginx, Nginx
from bench.overhead import COMPLETION_BODY, wrk_summary
from bench.targets import HANODE_VARIANTS, MODEL, VLLM_ROUTER, Extras, start_node
from bench.venvs import Installed
from hanode.devtools.procs import http_request

CANNED = "canned (upstream)"
VLLM_DEFAULT = "vllm-router (cache_aware)"  # its default policy; VLLM_ROUTER is round-robin
ORDER = (CANNED, "nginx", VLLM_ROUTER, VLLM_DEFAULT, *HANODE_VARIANTS)


@dataclass(frozen=True, slots=True)
class LimitedSettings:
    rounds: int = 3
    per_round_s: float = 3.0
    warmup_s: float = 1.0


QUICK = LimitedSettings(rounds=1, per_round_s=2.0, warmup_s=1.0)


@dataclass(slots=True)
class LimitedResult:
    runs: dict[str, wrk.WrkResult] = field(default_factory=dict)  # target -> combined rounds
    cpu_s: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    workers_seen: dict[str, int] = field(default_factory=dict)  # hanode variant -> children
    error: str = ""

    def cpu_ms_per_request(self, name: str) -> float | None:
        w = self.runs.get(name)
        if w is None or not w.requests or name not in self.cpu_s:
            return None
        return self.cpu_s[name] * 1e3 / w.requests

    def rps(self, name: str) -> float | None:
        w = self.runs.get(name)
        return w.rps if w is not None else None


def canned_bodies(sim_url: str) -> tuple[str, str]:
    """A completion and a chat completion as the simulator writes them (non-streamed)."""
    out = []
    for path, body in (
        ("/v1/completions", json.loads(COMPLETION_BODY)),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
        ),
    ):
        status, _, answer = http_request("POST", sim_url + path, body, timeout=5.0)
        if status != 200:
            raise BenchError(f"simulator {path} answered {status}")
        out.append(answer.decode())
    return out[0], out[1]


def _start(
    group: ProcGroup, tmp: Path, nginx_binary: str, extras: Extras, result: LimitedResult
) -> dict[str, tuple[int, Callable[[], float]]]:
    """Every target of this run: name -> (port, CPU-seconds function)."""
    sim = group.sim("limited-sim", "--model", MODEL, "--ttft-ms", "0", "--tpot-ms", "0")
    completion, chat = canned_bodies(sim.url)
    ports = [free_port() for _ in range(3)]
    canned = CannedNginx(nginx_binary, tmp / "canned", ports, [sim.port], completion, chat)
    canned.start(group)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    say(f"canned upstream: nginx on ports {ports} (pids {canned.pids()})")
    out: dict[str, tuple[int, Callable[[], float]]] = {CANNED: (ports[0], canned.cpu_seconds)}
    proxy = Nginx(nginx_binary, tmp / "nginx-proxy", free_port(), ports)
    proxy.start(group)
    out["nginx"] = (proxy.port, proxy.cpu_seconds)
    for name, policy in ((VLLM_ROUTER, "round_robin"), (VLLM_DEFAULT, None)):
        if not isinstance(extras.vllm_router, Installed):
            if extras.vllm_router is not None:
                result.skipped[name] = extras.vllm_router.reason
            continue
        try:
            proc, port = llm_routers.start_vllm_router(
                group,
                extras.vllm_router,
                f"limited-vllm-router-{policy or 'default'}",
                urls,
                MODEL,
                policy,
            )
            out[name] = (port, partial(tree_cpu_seconds, proc.pid))
        except (BenchError, TimeoutError, RuntimeError, OSError) as exc:
            result.skipped[name] = f"did not start: {failure_line(exc)}"
    for name in ("hanode", *extras.hanode_variants):
        try:
            node = start_node(group, tmp, name, urls)
        except (BenchError, TimeoutError, RuntimeError) as exc:
            result.skipped[name] = f"did not start: {failure_line(exc)}"
            continue
        result.workers_seen[name] = len(descendants(node.pid))
        out[name] = (node.router_port, partial(tree_cpu_seconds, node.pid))
    return out


def run(
    tmp: Path, nginx_binary: str, wrk_binary: str, extras: Extras, settings: LimitedSettings
) -> LimitedResult:
    """Start the canned upstream and the proxies, then interleave ``wrk -c64`` rounds."""
    result = LimitedResult()
    tmp.mkdir(parents=True, exist_ok=True)
    script = wrk.write_lua(tmp / "limited.lua", COMPLETION_BODY)
    with ProcGroup(tmp) as group:
        try:
            started = _start(group, tmp, nginx_binary, extras, result)
        except (BenchError, TimeoutError, RuntimeError, OSError) as exc:
            result.error = failure_line(exc)
            return result
        names = sorted(started, key=ORDER.index)
        for name in names:
            r = wrk.run_wrk(wrk_binary, _url(started, name), script, 64, settings.warmup_s)
            say(f"proxy-limited warm-up {name}: {wrk_summary(r)}")
        rounds: dict[str, list[wrk.WrkResult]] = {n: [] for n in names}
        cpu = dict.fromkeys(names, 0.0)
        for i in range(settings.rounds):
            for name in names:
                port_cpu = started[name][1]
                c0 = port_cpu()
                r = wrk.run_wrk(wrk_binary, _url(started, name), script, 64, settings.per_round_s)
                cpu[name] += port_cpu() - c0
                rounds[name].append(r)
                per = (cpu[name] * 1e3 / sum(x.requests for x in rounds[name])) if r.requests else 0
                say(f"proxy-limited round {i + 1} {name}: {wrk_summary(r)}, {per:.4f} ms CPU/req")
        for name in names:
            result.runs[name] = wrk.combine(rounds[name])
            result.cpu_s[name] = cpu[name]
    return result


def _url(started: dict[str, tuple[int, Callable[[], float]]], name: str) -> str:
    return f"http://127.0.0.1:{started[name][0]}/v1/completions"
