"""Streaming relay: 64 concurrent streams of 200 chunks through each target, and what relaying
one chunk costs the proxy.

The simulators stream ``max_tokens`` 200 at a small time per token (2 ms by default: 64 streams
ask for 32,000 chunks a second from the three of them, as a busy host would); one asyncio
client (uvloop) keeps ``concurrency`` streams open at once, each connection sending its next
streamed chat completion when the last one ended, and counts every SSE event
(:mod:`bench.sse`). Per target: the proxy's CPU over the run divided by the chunks delivered
(µs per chunk), chunks per second, the CPU per chunk of every process in the path (this
client, the three simulators and the proxy: what the box pays, whatever else runs on it), and
whether every stream was complete (``[DONE]`` after all its
chunks). Rounds interleave the targets; a slow target (LiteLLM) runs fewer streams, as said in
the table.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.harness import HOST, cpu_seconds, say
from bench.sse import StreamOutcome, classify
from bench.sse_client import KeepAlive
from bench.targets import LITELLM, MODEL, Targets


@dataclass(frozen=True, slots=True)
class RelaySettings:
    concurrency: int = 64
    max_tokens: int = 200
    streams_per_connection: int = 2  # per round
    rounds: int = 2
    tpot_ms: float = 2.0
    round_limit_s: float = 120.0  # per target and round
    idle_timeout_s: float = 30.0  # a stream that sends nothing this long is given up
    slow_concurrency: int = 64  # LiteLLM: ~1 ms of CPU per chunk
    slow_streams_per_connection: int = 1
    slow_rounds: int = 1


# two streams a connection still: with one, a target's CPU over the run is ~10 clock ticks
QUICK = RelaySettings(rounds=1, round_limit_s=30.0, slow_concurrency=16)


@dataclass(slots=True)
class RelayResult:
    name: str
    streams: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    chunks: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0  # the proxy's (direct: the simulator's)
    path_s: float = 0.0  # the client's, the simulators' and the proxy's together
    durations_s: list[float] = field(default_factory=list)  # per stream, sorted at the end
    concurrency: int = 0

    @property
    def complete(self) -> int:
        return self.outcomes.get("ok", 0)

    @property
    def us_per_chunk(self) -> float | None:
        return self.cpu_s * 1e6 / self.chunks if self.chunks else None

    @property
    def path_us_per_chunk(self) -> float | None:
        return self.path_s * 1e6 / self.chunks if self.chunks else None

    @property
    def chunks_per_s(self) -> float | None:
        return self.chunks / self.wall_s if self.wall_s else None


def request_bytes(port: int, max_tokens: int, headers: dict[str, str]) -> bytes:
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Relay this stream."}],
            "max_tokens": max_tokens,
            "stream": True,
        },
        separators=(",", ":"),
    ).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s:%d\r\n"
        b"Content-Type: application/json\r\nAccept: text/event-stream\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (HOST.encode(), port, extra, len(body), body)
    )


async def _one_connection(
    port: int,
    request: bytes,
    streams: int,
    want_chunks: int,
    deadline: float,
    out: list[tuple[StreamOutcome, float]],
    idle_timeout_s: float,
) -> None:
    """``streams`` streams back to back, one keep-alive connection (re-opened when closed)."""
    conn = KeepAlive(port)
    loop = asyncio.get_running_loop()
    try:
        for _ in range(streams):
            if loop.time() >= deadline:
                break
            t0 = loop.time()
            tally, error = await conn.exchange(
                request, lambda: max(0.01, min(idle_timeout_s, deadline - loop.time()))
            )
            out.append((classify(tally, want_chunks, error), loop.time() - t0))
    finally:
        await conn.close()


async def _streams(
    port: int,
    headers: dict[str, str],
    concurrency: int,
    per_connection: int,
    max_tokens: int,
    limit_s: float,
    idle_s: float,
) -> list[tuple[StreamOutcome, float]]:
    out: list[tuple[StreamOutcome, float]] = []
    request = request_bytes(port, max_tokens, headers)
    deadline = asyncio.get_running_loop().time() + limit_s
    await asyncio.gather(
        *(
            _one_connection(port, request, per_connection, max_tokens, deadline, out, idle_s)
            for _ in range(concurrency)
        )
    )
    return out


def run_streams(
    port: int,
    headers: dict[str, str],
    concurrency: int,
    per_connection: int,
    max_tokens: int,
    limit_s: float,
    idle_s: float = 30.0,
) -> list[tuple[StreamOutcome, float]]:
    """Run the client on a fresh event loop (uvloop when installed); (outcome, seconds) each."""
    coro = _streams(port, headers, concurrency, per_connection, max_tokens, limit_s, idle_s)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def path_cpu(t: Targets, name: str) -> float:
    """CPU-seconds of this process (the client), the simulators and the proxy ``name``."""
    own = os.times()
    total = own.user + own.system + sum(cpu_seconds(s.pid) for s in t.sims)
    return total if name == "direct" else total + t.cpu_of[name]()


def measure(t: Targets, settings: RelaySettings) -> dict[str, RelayResult]:
    """Switch the simulators to ``tpot_ms``, then interleave the targets over the rounds."""
    t.set_sim_timing(ttft_ms=0, tpot_ms=settings.tpot_ms)
    names = t.names
    results = {name: RelayResult(name) for name in names}
    for i in range(max(settings.rounds, settings.slow_rounds)):
        for name in names:
            slow = name == LITELLM
            if i >= (settings.slow_rounds if slow else settings.rounds):
                continue
            conc = settings.slow_concurrency if slow else settings.concurrency
            per = settings.slow_streams_per_connection if slow else settings.streams_per_connection
            r = results[name]
            r.concurrency = conc
            cpu0, path0 = t.cpu_of[name](), path_cpu(t, name)
            t0 = time.monotonic()
            got = run_streams(
                t.ports[name],
                t.headers_of(name),
                conc,
                per,
                settings.max_tokens,
                settings.round_limit_s,
                settings.idle_timeout_s,
            )
            wall = time.monotonic() - t0
            r.cpu_s += t.cpu_of[name]() - cpu0
            r.path_s += path_cpu(t, name) - path0
            r.wall_s += wall
            r.streams += len(got)
            for outcome, seconds in got:
                r.outcomes[outcome.kind] += 1
                r.chunks += outcome.chunks
                r.durations_s.append(seconds)
            say(
                f"relay round {i + 1} {name}: {len(got)} streams x {settings.max_tokens} tokens "
                f"in {wall:.2f} s, {dict(r.outcomes)}, "
                f"{(r.us_per_chunk or float('nan')):.1f} us proxy CPU/chunk so far"
            )
    for r in results.values():
        r.durations_s.sort()
    t.set_sim_timing(ttft_ms=0, tpot_ms=0)
    return results
