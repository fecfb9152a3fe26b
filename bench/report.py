"""docs/benchmarks.md (same layout run after run, so results stay comparable) and the
summary on stdout."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench import overload as overload_report
from bench import recovery as recovery_report
from bench import routers_report, scale_report
from bench import stream_continuation as continuation_report
from bench.cluster import report as cluster_report
from bench.harness import percentile
from bench.wrk import WrkResult

if TYPE_CHECKING:
    from bench.overhead import TargetResult
    from bench.run import RunResult


# --------------------------------------------------------------------------------------------
# numbers -> text
# --------------------------------------------------------------------------------------------


def _ms(us: float | None, digits: int = 3) -> str:
    if us is None or math.isnan(us):
        return "n/a"
    return f"{us / 1e3:.{digits}f}"


def _signed_ms(us: float | None) -> str:
    if us is None or math.isnan(us):
        return "n/a"
    return f"{us / 1e3:+.3f}"


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    measured: str
    target: str
    ok: bool | None  # None: could not be measured

    @property
    def word(self) -> str:
        return "n/a" if self.ok is None else ("PASS" if self.ok else "MISS")


def verdicts(r: RunResult) -> list[Verdict]:
    t = r.targets
    d, n, h = t.get("direct"), t.get("nginx"), t.get("hanode")
    out: list[Verdict] = []
    if n and h and n.c64 and h.c64 and n.c64.rps:
        ratio = h.c64.rps / n.c64.rps
        out.append(
            Verdict(
                "throughput at c=64 vs nginx",
                f"{ratio:.0%} ({h.c64.rps:,.0f} vs {n.c64.rps:,.0f} req/s)",
                ">= 90%",
                ratio >= 0.9,
            )
        )
    if h and h.cpu_ms_per_request is not None:
        vs = ""
        if n and n.cpu_ms_per_request:
            vs = f", {h.cpu_ms_per_request / n.cpu_ms_per_request:.1f}x nginx"
        out.append(
            Verdict(
                "router CPU per request",
                f"{h.cpu_ms_per_request:.3f} ms{vs}",
                "<= 0.100 ms",
                h.cpu_ms_per_request <= 0.1,
            )
        )
    if d and h and d.c1 and h.c1:
        added = h.c1.p50_us - d.c1.p50_us
        context = ""
        if n and n.c1:
            context = f" (nginx adds {(n.c1.p50_us - d.c1.p50_us) / 1e3:+.3f} ms on this machine)"
        out.append(
            Verdict(
                "added latency p50 at c=1 over direct",
                f"{added / 1e3:+.3f} ms{context}",
                "<= 0.100 ms",
                added <= 100.0,
            )
        )
    if n and h and n.stream and h.stream and n.stream.samples_us and h.stream.samples_us:
        added = h.stream.p50_us - n.stream.p50_us
        out.append(
            Verdict(
                "stream first chunk p50 over nginx",
                f"{added / 1e3:+.3f} ms",
                "<= 0.200 ms",
                added <= 200.0,
            )
        )
    return out


def results_table(r: RunResult) -> str:
    t = r.targets
    names = ("direct", "nginx", "hanode")
    d = t.get("direct")

    def row(label: str, values: list[str], note: str = "") -> str:
        return f"| {label} | " + " | ".join(values) + f" | {note} |"

    def each(fn: Callable[[TargetResult], str]) -> list[str]:
        return [fn(t[n]) if n in t else "n/a" for n in names]

    lines = [
        "| metric | direct (1 sim) | nginx | hanode | hanode vs baseline |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    h, n = t.get("hanode"), t.get("nginx")
    if d and d.c1 and h and h.c1 and n and n.c1:
        dp50, dp99 = d.c1.p50_us, d.c1.p99_us
        lines.append(
            row(
                "latency p50, c=1 (ms)",
                each(lambda x: _ms(x.c1.p50_us if x.c1 else None)),
                f"{_signed_ms(h.c1.p50_us - dp50)} over direct "
                f"(nginx {_signed_ms(n.c1.p50_us - dp50)})",
            )
        )
        lines.append(
            row(
                "latency p99, c=1 (ms)",
                each(lambda x: _ms(x.c1.p99_us if x.c1 else None)),
                f"{_signed_ms(h.c1.p99_us - dp99)} over direct "
                f"(nginx {_signed_ms(n.c1.p99_us - dp99)})",
            )
        )
        lines.append(
            row(
                "throughput, c=1 (req/s)",
                each(lambda x: f"{x.c1.rps:,.0f}" if x.c1 else "n/a"),
                f"{h.c1.rps / n.c1.rps:.0%} of nginx" if n.c1.rps else "",
            )
        )
    if h and h.c64 and n and n.c64:
        lines.append(
            row(
                "throughput, c=64 (req/s)",
                each(lambda x: f"{x.c64.rps:,.0f}" if x.c64 else "n/a"),
                f"{h.c64.rps / n.c64.rps:.0%} of nginx" if n.c64.rps else "",
            )
        )
        lines.append(
            row(
                "latency p50 / p99, c=64 (ms)",
                each(lambda x: f"{_ms(x.c64.p50_us, 2)} / {_ms(x.c64.p99_us, 2)}" if x.c64 else ""),
                "",
            )
        )
        hc, nc = h.cpu_ms_per_request, n.cpu_ms_per_request
        lines.append(
            row(
                "CPU per request, c=64 (ms)",
                each(
                    lambda x: (
                        f"{x.cpu_ms_per_request:.4f}" if x.cpu_ms_per_request is not None else "n/a"
                    )
                ),
                f"{hc / nc:.1f}x nginx" if hc is not None and nc else "",
            )
        )
    if h and h.stream and n and n.stream:
        lines.append(
            row(
                "stream first chunk p50 (ms)",
                each(lambda x: _ms(x.stream.p50_us) if x.stream else "n/a"),
                f"{_signed_ms(h.stream.p50_us - n.stream.p50_us)} over nginx",
            )
        )
        lines.append(
            row(
                "stream first chunk p99 (ms)",
                each(lambda x: _ms(x.stream.p99_us) if x.stream else "n/a"),
                f"{_signed_ms(h.stream.p99_us - n.stream.p99_us)} over nginx",
            )
        )
    if all(x.split_head is not None for x in t.values()):
        lines.append(
            row(
                "responses whose head arrived before the body, c=1",
                each(lambda x: f"{x.split_head:.0%}"),
                "0% = head and body sent in one write",
            )
        )
    errs = each(
        lambda x: str(
            sum(w.error_count for w in (x.c1, x.c64) if w is not None)
            + (x.stream.errors if x.stream else 0)
        )
    )
    lines.append(row("errors (wrk + stream client)", errs, "must be 0"))
    return "\n".join(lines)


def rounds_text(r: RunResult) -> str:
    """Per-round numbers: how much the machine moved during the run."""
    parts: list[str] = []
    picks: list[tuple[str, Callable[[WrkResult], str]]] = [
        ("c=1 p50 (ms)", lambda w: _ms(w.p50_us)),
        ("c=64 req/s", lambda w: f"{w.rps:,.0f}"),
    ]
    for label, pick in picks:
        cells = []
        for name, t in r.targets.items():
            w = t.c1 if label.startswith("c=1") else t.c64
            if w is not None and w.rounds:
                cells.append(f"{name} {' / '.join(pick(x) for x in w.rounds)}")
        if cells:
            parts.append(f"{label} by round: " + "; ".join(cells))
    return "\n".join(f"* {p}" for p in parts)


def verdict_table(r: RunResult) -> str:
    lines = ["| target | measured | goal | verdict |", "| --- | --- | --- | --- |"]
    for v in verdicts(r):
        lines.append(f"| {v.name} | {v.measured} | {v.target} | **{v.word}** |")
    return "\n".join(lines)


def machine_table(r: RunResult) -> str:
    lines = ["| | |", "| --- | --- |"]
    for k, v in r.machine.items():
        lines.append(f"| {k} | {v} |")
    return "\n".join(lines)


def profile_section(r: RunResult, top: int = 15) -> str:
    p = r.profile
    if p is None:
        return "Not run (`--no-profile`)."
    if p.error:
        return f"No profile: {p.error}"
    rps = f" (throughput under profiling: {r.profile_rps:,.0f} req/s)" if r.profile_rps else ""
    lines = [
        f"py-spy, {p.total} samples of the hanode process during a c=64 wrk run{rps} "
        f"({p.idle} samples of idle thread-pool workers left out). "
        "Self time = samples whose innermost Python frame is that function (time in C code, "
        "e.g. uvloop's socket calls or httptools' parser, is charged to the Python frame that "
        "called it; idle time in epoll is not sampled).",
        "",
        "| self % | function (file) |",
        "| ---: | --- |",
    ]
    for key, count in p.by_function.most_common(top):
        lines.append(f"| {100.0 * count / p.total:.1f} | `{key}` |")
    lines += ["", "| self % | file |", "| ---: | --- |"]
    for key, count in p.by_file.most_common(10):
        lines.append(f"| {100.0 * count / p.total:.1f} | `{key}` |")
    lines += ["", "Inclusive (on the stack), hanode functions only:", ""]
    lines += ["| incl. % | function (file) |", "| ---: | --- |"]
    shown = 0
    for key, count in p.inclusive.most_common():
        if "hanode/" not in key:
            continue
        lines.append(f"| {100.0 * count / p.total:.1f} | `{key}` |")
        shown += 1
        if shown >= 20:
            break
    return "\n".join(lines)


def native_section(r: RunResult, top: int = 12) -> str:
    p = r.native_profile
    if p is None:
        return ""
    if p.error:
        return f"No native profile: {p.error}"
    lines = [
        f"The same with C frames (`py-spy --native`, {p.total} samples, {p.idle} samples of idle "
        "pool threads left out; py-spy pauses the process "
        "for each sample, so only the shares count). Names ending in `(libc.so.6)` are system "
        "calls and C library code (`write` = sending on a socket, `read` = receiving, "
        "`epoll_pwait` = waiting); `.c` files are uvloop/libuv.",
        "",
        "| self % | function (file) |",
        "| ---: | --- |",
    ]
    for key, count in p.by_function.most_common(top):
        lines.append(f"| {100.0 * count / p.total:.1f} | `{key}` |")
    if p.syscalls:
        lines += [
            "",
            "Socket system calls by the hanode function that made them:",
            "",
            "| % of samples | call <- hanode function |",
            "| ---: | --- |",
        ]
        for key, count in p.syscalls.most_common(8):
            lines.append(f"| {100.0 * count / p.total:.1f} | `{key}` |")
    return "\n".join(lines)


def failover_section(r: RunResult) -> str:
    fo = r.failover
    if fo is None:
        return "Not run."
    lat = fo.latencies_ms()
    errs = fo.errors()
    around = fo.around_kill()
    slow = max(around, key=lambda s: s.latency_s) if around else None
    slowest = max(fo.samples, key=lambda s: s.latency_s) if fo.samples else None
    before = sorted(s.latency_s * 1e3 for s in fo.samples if s.start + s.latency_s < fo.kill_at)
    after = sorted(s.latency_s * 1e3 for s in fo.samples if s.start > fo.kill_at + 1.0)
    err_text = ", ".join(f"{k} x{v}" for k, v in errs.most_common()) if errs else "none"
    served = ", ".join(f"{k or '?'}: {v}" for k, v in sorted(fo.replicas_after().items()))
    lines = [
        "| | |",
        "| --- | --- |",
        f"| requests | {len(fo.samples)} in {fo.duration_s:.0f} s |",
        f"| client-visible errors | {sum(errs.values())} ({err_text}) |",
        f"| latency p50 / p99 / max, whole run (ms) | {percentile(lat, 50):.1f} / "
        f"{percentile(lat, 99):.1f} / {lat[-1] if lat else float('nan'):.1f} |",
        f"| latency p50 / p99 before the kill (ms) | {percentile(before, 50):.1f} / "
        f"{percentile(before, 99):.1f} |",
        f"| latency p50 / p99 from 1 s after the kill (ms) | {percentile(after, 50):.1f} / "
        f"{percentile(after, 99):.1f} |",
        "| slowest request around the kill (in flight or started within 3 s) | "
        + (
            f"{slow.latency_s * 1e3:.1f} ms, started {slow.start - fo.kill_at:+.3f} s "
            f"from the kill, {slow.kind}"
            if slow
            else "n/a"
        )
        + " |",
        "| slowest request of the run | "
        + (
            f"{slowest.latency_s * 1e3:.1f} ms, started at {slowest.start:.3f} s "
            f"({slowest.start - fo.kill_at:+.3f} s from the kill), {slowest.kind}"
            if slowest
            else "n/a"
        )
        + " |",
        f"| killed | {fo.killed} (SIGKILL) at {fo.kill_at:.2f} s |",
        f"| hanode /status after the run | {fo.status_after or 'n/a'} |",
        f"| served by (ok answers from 1 s after the kill) | {served or 'n/a'} |",
    ]
    return "\n".join(lines)


def render_summary(r: RunResult) -> str:
    m = r.machine
    machine = (
        f"{m.get('cpu')}, {m.get('cores')}, kernel {m.get('kernel')}, Python {m.get('python')}, "
        f"uvloop {m.get('uvloop')}, httptools {m.get('httptools')}, {m.get('nginx')}, "
        f"{m.get('date')}; {m.get('background load')}"
    )
    text = (
        f"{machine}\n\n{results_table(r)}\n\n{rounds_text(r)}\n\n{verdict_table(r)}\n\n"
        f"failover ({r.failover.killed if r.failover else 'nothing'} killed):\n"
        f"{failover_section(r)}"
    )
    if r.routers is not None:
        text += f"\n\n{routers_report.summary(r.targets, r.routers)}"
    if r.continuation is not None:
        text += (
            f"\n\nstreams through a replica's death:\n{continuation_report.render(r.continuation)}"
        )
    if r.recovery is not None:
        text += "\n\nrecovery (MTTR from the incident timeline):\n"
        text += recovery_report.render(r.recovery)
    if r.overload is not None:
        text += "\n\noverload (admission off and on):\n" + overload_report.render(r.overload)
    if r.cluster is not None:
        text += f"\n\n{cluster_report.summary(r.cluster)}"
    if r.scale is not None:
        text += f"\n\n{scale_report.summary(r.scale)}"
    return text


METHOD = """\
## Method

`make bench` (= `.venv/bin/python -m bench.run`, code in `bench/`) does everything in one run,
from nothing: it installs Debian's `nginx-light` and `wrk` with apt-get when they are missing,
starts **three `hanode sim` replicas** (`--ttft-ms 0 --tpot-ms 0`, capacity 1024, uvloop), then
**nginx** and **one hanode node** in front of the *same* three simulators, and measures three
targets one after the other on loopback:

* **direct** - wrk straight to simulator 0: the floor (what a request costs without a proxy).
* **nginx** - nginx 1 worker, round-robin upstream over the 3 sims, `proxy_http_version 1.1`,
  `proxy_set_header Connection ""`, `proxy_buffering off`, upstream `keepalive 128`,
  `access_log off`, `keepalive_requests` raised so wrk's connections are never recycled;
  foreground master (own prefix, pid and temp dirs in a temporary directory).
* **hanode** - `hanode run` with the 3 sims as `[[replicas]]` (engine vllm, health interval 1 s),
  measured once `/status` reports every replica `healthy`.

Measurements (after a 2 s warm-up at c=64 per target). Each measurement runs in 3 rounds of
3 s, and in each round the three targets take turns (direct, nginx, hanode), so a burst of
background load on a shared machine hits all three alike; percentiles are the median of the
rounds', throughput is total requests over total time.

1. **Latency at concurrency 1**: `wrk -t1 -c1 -d3s --latency` with a Lua script that POSTs
   `/v1/completions` (`max_tokens` 16, a non-streamed ~350-byte answer). "Added" latency is the
   target's p50 (p99) minus direct's p50 (p99) from the same run.
2. **Throughput at concurrency 64**: `wrk -t1 -c64 -d3s`. During this run the proxy's CPU time
   (utime + stime of the process and its threads from `/proc/PID/stat`; nginx: master + worker)
   is sampled before and after; **CPU per request** = CPU seconds / requests wrk completed. For
   *direct* the number is the simulator's own cost (a reference, not a proxy cost).
3. **Stream first-chunk delay**: the simulators are switched (same processes, `/admin/config`) to
   `ttft 0, tpot 1 ms`; a blocking raw-socket client sends a streamed chat completion
   (`max_tokens` 4) over one keep-alive connection and measures the time from sending the request
   to receiving the first bytes of the first SSE `data:` chunk, reads the stream to its end, and
   repeats (up to 2000 streams or 9 s per target, over the 3 rounds).
4. **Profile**: a separate c=64 wrk run against hanode while `py-spy record --nonblocking
   --format raw` samples the hanode process (not the run whose numbers are in the table), then a
   short one with `--native` (C frames: uvloop, libuv, libc system calls).
5. **Failover**: 8 client threads (keep-alive `http.client`, 10 s timeout, no retries) send
   non-streamed completions through hanode for 10 s (sims still at tpot 1 ms, so each request
   takes ~16 ms and several are in flight at any moment); one simulator is SIGKILLed at 3 s.
   Every non-200 answer, answer without `choices`, or exception counts as a client-visible error.
6. **Cluster** (`bench/cluster/`, skipped with `--no-cluster`): seven nodes (three with
   `--quick`) in one Raft cluster on loopback, after the single-node targets have been stopped;
   breaker propagation, leader failover, the consensus write rate and ceiling, and what each
   node costs the machine, each with its method in the Cluster section.
7. **Cluster scale** (`bench/scale.py`, skipped with `--no-cluster`): the state machine,
   snapshots and planner at 8, 64 and 512 replicas in process, with the limits of a 100-host
   fleet derived from them and from the live cluster's figures.

Everything runs on one machine: wrk, the proxies and the simulators share the CPUs, so
throughput is bounded by the whole box (the Python simulators included), not by the proxy alone.
All processes are started by the benchmark and stopped by pid when it ends.

## How to read it

* Compare **within one run** only (same machine, same moment): the ratios in the last column and
  the verdicts are computed from numbers measured side by side. Absolute numbers move with the
  machine and whatever else runs on it.
* **Added p50 at c=1** is the proxy's per-request latency tax when idle; p99 at c=1 on a shared
  2-core VM is dominated by scheduling noise, read it as a sanity check.
* **Throughput at c=64** is a CPU contest on a small machine: a proxy that needs more CPU per
  request leaves less for the simulators and wrk. **CPU per request** is the cleaner number:
  it does not depend on how busy the rest of the box was.
* **First chunk** says how long a proxy holds back the start of a stream; direct is the floor.
* The **profile** says where hanode's CPU goes. Self time of `Runner.run (asyncio/runners.py)`
  is time inside uvloop's C event loop itself (epoll, socket reads, callback dispatch: `uvloop.run`
  drives an `asyncio.Runner`), and self time of a function that calls `transport.write` is mostly
  the `send()` system call uvloop makes right there. Both are I/O cost rather than Python logic.
"""


def _scale_section(r: RunResult) -> str:
    if r.scale is None:
        return "Not run (`--no-cluster`)."
    return scale_report.render(r.scale, scale_report.limits_from(r.scale, r.cluster))


def render(r: RunResult) -> str:
    verdict_lines = "\n".join(
        f"* {v.name}: **{v.word}** ({v.measured}, goal {v.target})" for v in verdicts(r)
    )
    notes = "\n".join(f"* {n}" for n in r.notes) if r.notes else "* none"
    return f"""\
# hanode benchmarks

Generated by `make bench` (`python -m bench.run`); this file is overwritten by each run.
Run on {r.machine.get("date", "?")}, {r.elapsed_s:.0f} s in all.

## Results

{results_table(r)}

Rounds (targets interleaved; the table shows the median of the rounds' percentiles and the
total throughput):

{rounds_text(r)}

### Targets

{verdict_table(r)}

{verdict_lines}

### hanode against the LLM routers: nginx, vllm-router, LiteLLM (bench/routers.py)

{routers_report.section(r)}

### Failover (hanode, concurrency 8, one of three simulators SIGKILLed)

{failover_section(r)}

### Streams through a replica's death (stream continuation)

{continuation_report.render(r.continuation) if r.continuation is not None else "Not run."}

### Recovery: MTTR of a crash (bench/recovery.py)

{recovery_report.render(r.recovery) if r.recovery is not None else "Not run."}

### Overload: admission off and on (bench/overload.py)

{overload_report.render(r.overload) if r.overload is not None else "Not run."}

### Cluster ({r.cluster.settings.nodes if r.cluster is not None else "no"} nodes, Raft)

{cluster_report.render(r.cluster) if r.cluster is not None else "Not run (`--no-cluster`)."}

### Cluster scale (bench/scale.py)

{_scale_section(r)}

### Where hanode's time goes

{profile_section(r)}

{native_section(r)}

### Notes from this run

{notes}

### Machine

{machine_table(r)}

{METHOD}"""
