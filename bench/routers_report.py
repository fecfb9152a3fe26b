"""The LLM-router section of docs/benchmarks.md: every target side by side, the proxy-limited
ceilings, failover per target, and the targets as ratios measured in the same run.

Pure: numbers in, markdown out (tested in tests/unit/bench/test_routers_report.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.proxy_limited import CANNED
from bench.proxy_limited import ORDER as LIMITED_ORDER
from bench.targets import ORDER, VLLM_ROUTER

if TYPE_CHECKING:
    from bench.failover_targets import TargetFailover
    from bench.overhead import TargetResult
    from bench.proxy_limited import LimitedResult
    from bench.routers import RoutersResult
    from bench.run import RunResult
    from bench.stream_relay import RelayResult

CPU_RATIO_GOAL = 0.8  # hanode's CPU per request and per chunk, at most this x vllm-router's
THROUGHPUT_GOAL = 1.0  # c=64 with workers = "auto", at least vllm-router's
SCALING_GOAL = 1.7  # proxy-limited, 2 workers over 1


@dataclass(frozen=True, slots=True)
class RouterVerdict:
    name: str
    measured: str
    goal: str
    ok: bool | None  # None: not measured (the reason is in ``measured``)

    @property
    def word(self) -> str:
        return "n/a" if self.ok is None else ("PASS" if self.ok else "MISS")


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing, not finite, or b is zero."""
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
        return None
    return a / b


def fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:{spec}}{suffix}"


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def fmt_ratio(value: float | None) -> str:
    return fmt(value, ".2f", "x")


def ratio_verdict(
    name: str,
    mine: float | None,
    theirs: float | None,
    goal: float,
    at_most: bool,
    what: str,
    missing: str,
) -> RouterVerdict:
    """``mine / theirs`` against ``goal`` (at most or at least); ``what`` formats the inputs."""
    r = ratio(mine, theirs)
    sign = "<=" if at_most else ">="
    goal_text = f"{sign} {goal:.2f}x"
    if r is None:
        return RouterVerdict(name, f"not measured: {missing}", goal_text, None)
    ok = r <= goal if at_most else r >= goal
    return RouterVerdict(name, f"{r:.2f}x ({what})", goal_text, ok)


def _cpu_req(t: dict[str, TargetResult], name: str) -> float | None:
    tr = t.get(name)
    return tr.cpu_ms_per_request if tr is not None else None


def _rps(t: dict[str, TargetResult], name: str) -> float | None:
    tr = t.get(name)
    return tr.c64.rps if tr is not None and tr.c64 is not None else None


def _chunk(relay: dict[str, RelayResult], name: str) -> float | None:
    r = relay.get(name)
    return r.us_per_chunk if r is not None else None


def verdicts(targets: dict[str, TargetResult], rr: RoutersResult) -> list[RouterVerdict]:
    """The issue's three targets (CPU counted twice: per request and per chunk)."""
    vr = VLLM_ROUTER
    why_vr = rr.skipped.get(vr, "vllm-router did not run")
    h_req, v_req = _cpu_req(targets, "hanode"), _cpu_req(targets, vr)
    h_chunk, v_chunk = _chunk(rr.relay, "hanode"), _chunk(rr.relay, vr)
    auto, v_rps = _rps(targets, "hanode-auto"), _rps(targets, vr)
    out = [
        ratio_verdict(
            "proxy CPU per request (c=64), hanode workers=1 vs vllm-router",
            h_req,
            v_req,
            CPU_RATIO_GOAL,
            True,
            f"{fmt(h_req, '.4f')} vs {fmt(v_req, '.4f')} ms",
            why_vr if v_req is None else "hanode did not run",
        ),
        ratio_verdict(
            "proxy CPU per chunk (64 streams), hanode workers=1 vs vllm-router",
            h_chunk,
            v_chunk,
            CPU_RATIO_GOAL,
            True,
            f"{fmt(h_chunk, '.1f')} vs {fmt(v_chunk, '.1f')} µs",
            why_vr if v_chunk is None else "no relay run",
        ),
        ratio_verdict(
            'throughput at c=64, hanode workers="auto" vs vllm-router',
            auto,
            v_rps,
            THROUGHPUT_GOAL,
            False,
            f"{fmt(auto, ',.0f')} vs {fmt(v_rps, ',.0f')} req/s",
            why_vr if v_rps is None else rr.skipped.get("hanode-auto", "hanode-auto did not run"),
        ),
    ]
    lim = rr.limited
    one = lim.rps("hanode") if lim else None
    two = lim.rps("hanode-w2") if lim else None
    cores = os.cpu_count() or 1
    why = (lim.error or lim.skipped.get("hanode-w2", "")) if lim else "not run"
    out.append(
        ratio_verdict(
            "proxy-limited throughput, hanode workers=2 vs workers=1",
            two,
            one,
            SCALING_GOAL,
            False,
            f"{fmt(two, ',.0f')} vs {fmt(one, ',.0f')} req/s on {cores} cores shared with wrk "
            "and the upstream",
            why or "hanode-w2 did not run",
        )
    )
    return out


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def targets_table(targets: dict[str, TargetResult], rr: RoutersResult) -> str:
    """One row per target: per request (wrk) and per chunk (stream relay), ratios to nginx and
    vllm-router from the same run."""
    names = [n for n in ORDER if n in targets or n in rr.relay]
    names += [n for n in targets if n not in names]
    head = [
        "target",
        "c=1 p50 ms",
        "c=64 req/s",
        "CPU ms/request (c=64)",
        "CPU/req vs nginx",
        "CPU/req vs vllm-router",
        "CPU µs/chunk (64 streams)",
        "CPU/chunk vs vllm-router",
        "chunks/s",
        "streams complete",
        "path CPU µs/chunk",
        "path over direct",
    ]
    lines = [_row(head), _row(["---", *(["---:"] * (len(head) - 1))])]
    n_req, v_req = _cpu_req(targets, "nginx"), _cpu_req(targets, VLLM_ROUTER)
    v_chunk = _chunk(rr.relay, VLLM_ROUTER)
    direct = rr.relay.get("direct")
    floor = direct.path_us_per_chunk if direct else None
    for name in names:
        tr = targets.get(name)
        rl = rr.relay.get(name)
        cpu = tr.cpu_ms_per_request if tr else None
        chunk = rl.us_per_chunk if rl else None
        complete = f"{rl.complete}/{rl.streams}" if rl else "n/a"
        if rl and rl.concurrency and rl.concurrency != 64:
            complete += f" ({rl.concurrency} at once)"
        label = f"{name} (simulator, no proxy)" if name == "direct" else name
        lines.append(
            _row(
                [
                    label,
                    fmt(tr.c1.p50_us / 1e3 if tr and tr.c1 else None, ".2f"),
                    fmt(tr.c64.rps if tr and tr.c64 else None, ",.0f"),
                    fmt(cpu, ".4f"),
                    fmt_ratio(ratio(cpu, n_req)) if name != "direct" else "",
                    fmt_ratio(ratio(cpu, v_req)) if name != "direct" else "",
                    fmt(chunk, ".1f"),
                    fmt_ratio(ratio(chunk, v_chunk)) if name != "direct" else "",
                    fmt(rl.chunks_per_s if rl else None, ",.0f"),
                    complete,
                    fmt(rl.path_us_per_chunk if rl else None, ".1f"),
                    ""
                    if name == "direct"
                    else fmt(diff(rl.path_us_per_chunk if rl else None, floor), "+.1f"),
                ]
            )
        )
    return "\n".join(lines)


def limited_table(lim: LimitedResult) -> str:
    if lim.error:
        return f"Not run: {lim.error}"
    head = ["target", "req/s (c=64)", "vs nginx", "vs vllm-router", "CPU ms/request", "processes"]
    lines = [_row(head), _row(["---", *(["---:"] * (len(head) - 1))])]
    n, v = lim.rps("nginx"), lim.rps(VLLM_ROUTER)
    for name in [x for x in LIMITED_ORDER if x in lim.runs]:
        rps = lim.rps(name)
        procs = ""
        if name in lim.workers_seen:
            kids = lim.workers_seen[name]
            procs = f"node + {kids} workers" if kids else "1 (the node)"
        errs = lim.runs[name].error_count
        label = f"{name}: nginx `return 200` (the floor)" if name == CANNED else name
        if errs:
            label += f" ({errs} errors)"
        lines.append(
            _row(
                [
                    label,
                    fmt(rps, ",.0f"),
                    fmt_ratio(ratio(rps, n)) if name != CANNED else "",
                    fmt_ratio(ratio(rps, v)) if name != CANNED else "",
                    fmt(lim.cpu_ms_per_request(name), ".4f"),
                    procs,
                ]
            )
        )
    for name, why in lim.skipped.items():
        lines.append(_row([name, f"not run: {why}", "", "", "", ""]))
    return "\n".join(lines)


def failover_table(fo: dict[str, TargetFailover]) -> str:
    head = [
        "target",
        "requests ok",
        "request errors",
        "streams complete",
        "truncated streams",
        "stream errors",
        "errors > 1 s after the kill",
        "error kinds",
    ]
    lines = [_row(head), _row(["---", *(["---:"] * (len(head) - 2)), "---"])]
    for name, f in fo.items():
        if f.error:
            lines.append(_row([name, f"not run: {f.error}", *([""] * (len(head) - 2))]))
            continue
        kinds = {k: v for k, v in (f.requests + f.streams).items() if k != "ok"}
        lines.append(
            _row(
                [
                    name,
                    f"{f.requests.get('ok', 0)}/{sum(f.requests.values())}",
                    str(f.request_errors),
                    f"{f.streams.get('ok', 0)}/{sum(f.streams.values())}",
                    str(f.truncated),
                    str(f.stream_errors),
                    str(f.late_errors),
                    ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())) or "none",
                ]
            )
        )
    return "\n".join(lines)


def verdict_table(vs: list[RouterVerdict]) -> str:
    lines = ["| target | measured | goal | verdict |", "| --- | --- | --- | --- |"]
    lines += [f"| {v.name} | {v.measured} | {v.goal} | **{v.word}** |" for v in vs]
    return "\n".join(lines)


METHOD = """\
How these were measured (`bench/routers.py` and the modules it names):

* **Targets.** The same three `hanode sim` replicas behind nginx (1 worker), **vllm-router**
  (PyPI `vllm-router`, the Rust router; `--policy round_robin`, its cheapest policy: its
  default `cache_aware` is measured in the proxy-limited table), **LiteLLM's proxy**
  (`litellm[proxy]`, its defaults, a `model_list` of three `openai/` deployments under one
  name and the `master_key` it needs, sent as `Authorization: Bearer`) and hanode with
  `[router] workers` = 1 (`hanode`), 2 (`hanode-w2`) and "auto" (`hanode-auto`). vllm-router
  and LiteLLM are pip-installed into their own venvs under `~/.cache/hanode/bench/`
  (`bench/venvs.py`, pinned versions, reused by later runs), never into the project's. The CPU
  of a target is utime + stime from `/proc` of its process, its threads and its child
  processes (hanode's workers; a worker reaped mid-run still counts through the node's
  cutime).
* **Per request.** The wrk runs of the main table above (c=1 latency, c=64 throughput, CPU per
  request), every target in the same interleaved rounds.
* **Stream relay.** One asyncio client (uvloop) keeps {conc} streamed chat completions of
  `max_tokens` {tokens} open at once, each connection sending its next stream when the last
  ended ({per} per connection and round, {rounds} rounds; LiteLLM, at ~1 ms of CPU a chunk,
  {slow_conc} at once, {slow_per} per connection, {slow_rounds} round); the simulators run at
  tpot {tpot:g} ms ({conc} streams ask for {demand:,.0f} chunks a second). Every SSE `data:`
  event is counted after de-chunking (`bench/sse.py`); a stream is complete when `[DONE]`
  came after at least {tokens} events (a stream silent for {idle:g} s is given up: truncated,
  or its exception when no answer had begun). CPU µs/chunk = the target's CPU over the run /
  chunks delivered; path CPU µs/chunk = the CPU of every process in the path (the client, the
  three simulators, the proxy) per chunk, and "over direct" what the path costs per chunk
  beyond streams sent straight to a simulator: the proxy and whatever extra it makes the
  upstreams and the client do (other processes on the machine are not in it).
* **Proxy-limited.** The upstreams are one nginx answering every completion on three ports
  with a canned body a simulator wrote (`return 200 '...'`; health paths go to a simulator),
  so the proxy is the bottleneck: `wrk -c64` per target in interleaved rounds. LiteLLM is left
  out (its ceiling is its c=64 figure above). On a 2-core machine wrk, the canned upstream and
  the proxy share both cores: a second worker has at most what the other two leave.
* **Failover.** For each target, three fresh simulators (tpot {fo_tpot:g} ms) and that target
  alone in front; {fo_streams} streamed ({fo_tokens} chunks) and {fo_requests} non-streamed
  clients back to back without retries; one simulator SIGKILLed {kill_at:g} s into {fo_s:g} s.
  Errors are exceptions and non-200 answers, truncated streams are 200s that stopped short or
  ended without `[DONE]`.
"""


def method(rr: RoutersResult) -> str:
    """:data:`METHOD` with the settings this run used."""
    rel, fo = rr.settings.relay, rr.settings.failover
    return METHOD.format(
        conc=rel.concurrency,
        tokens=rel.max_tokens,
        per=rel.streams_per_connection,
        rounds=rel.rounds,
        tpot=rel.tpot_ms,
        idle=rel.idle_timeout_s,
        slow_conc=rel.slow_concurrency,
        slow_per=rel.slow_streams_per_connection,
        slow_rounds=rel.slow_rounds,
        demand=rel.concurrency * 1000 / rel.tpot_ms if rel.tpot_ms else float("inf"),
        fo_tpot=fo.tpot_ms,
        fo_streams=fo.streams,
        fo_tokens=fo.stream_tokens,
        fo_requests=fo.requests,
        kill_at=fo.kill_at_s,
        fo_s=fo.duration_s,
    )


def render(targets: dict[str, TargetResult], rr: RoutersResult) -> str:
    parts = [targets_table(targets, rr)]
    if rr.skipped:
        parts.append(
            "Left out of this run: "
            + "; ".join(f"{name}: {why}" for name, why in sorted(rr.skipped.items()))
        )
    if rr.limited is not None:
        parts.append("#### Proxy-limited: fast upstreams, the proxy's own ceiling")
        parts.append(limited_table(rr.limited))
    if rr.failover:
        parts.append("#### Failover per target: one of three simulators SIGKILLed under load")
        parts.append(failover_table(rr.failover))
    parts += ["#### Targets (ratios from this run)", verdict_table(verdicts(targets, rr))]
    parts.append(method(rr))
    return "\n\n".join(p for p in parts if p)


def summary(targets: dict[str, TargetResult], rr: RoutersResult) -> str:
    text = f"LLM routers:\n{targets_table(targets, rr)}"
    if rr.limited is not None:
        text += f"\n\nproxy-limited:\n{limited_table(rr.limited)}"
    if rr.failover:
        text += f"\n\nfailover per target:\n{failover_table(rr.failover)}"
    return text + f"\n\n{verdict_table(verdicts(targets, rr))}"


def section(r: RunResult) -> str:
    return render(r.targets, r.routers) if r.routers is not None else "Not run (`--no-routers`)."
