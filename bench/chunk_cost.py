"""What relaying one streamed chunk costs: proxy CPU per chunk, and the upstream's CPU per
chunk with the proxy in front versus direct.

One simulator streams ``--streams`` concurrent chat completions of ``--chunks`` tokens each
(``ttft 0``, ``--tpot-ms`` per token) to an asyncio client in this process: directly, through
one hanode node, through the floor of a Python relay (:mod:`bench.chunk_floor`: uvloop
forwarding bytes, nothing else), and (if installed) through nginx with ``proxy_buffering
off``. For each round the CPU time of every process involved is read from /proc before and
after, and divided by the SSE events the client received; so are the system calls
(/proc/PID/io) and the machine's TCP segments. Rounds are interleaved and the median per
target is reported, since the machine is shared. ``--baseline DIR`` adds a node run from
another checkout, for before/after figures in one run.

    python -m bench.chunk_cost --quick           # a few seconds
    python -m bench.chunk_cost --profile         # and py-spy's top functions of the node

Standalone: nothing here is asserted; the figures are for comparing changes on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness import HOST, ProcGroup, child_pids, cpu_seconds, free_port, machine_cpu
from bench.nginx import Nginx
from bench.profile import load as load_profile
from bench.profile import start_record
from hanode.devtools.procs import http_get, node_config_toml, wait_until

MODEL = "chunk-model"
_END = b"\r\n0\r\n\r\n"


@dataclass(slots=True)
class Round:
    target: str
    events: int
    complete: int  # streams that ended with [DONE] and the last chunk
    client_reads: int  # data_received calls of the client: one per segment it got, roughly
    wall_s: float
    proxy_cpu_s: float
    sim_cpu_s: float
    other_cpu_s: float  # the rest of the machine: this client, the kernel, other processes
    proxy_calls: tuple[int, int]  # read and write system calls (/proc/PID/io syscr, syscw)
    sim_calls: tuple[int, int]
    tcp: dict[str, int]  # the machine's TCP counters over the round (_SEGMENT_KEYS)

    @property
    def proxy_us(self) -> float:
        return self.proxy_cpu_s / max(self.events, 1) * 1e6

    @property
    def sim_us(self) -> float:
        return self.sim_cpu_s / max(self.events, 1) * 1e6

    @property
    def other_us(self) -> float:
        return self.other_cpu_s / max(self.events, 1) * 1e6

    def per_event(self, calls: tuple[int, int]) -> str:
        n = max(self.events, 1)
        return f"{calls[0] / n:.2f}/{calls[1] / n:.2f}"


class _Stream(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[tuple[int, bool, int]]) -> None:
        self.done = done
        self.buf = bytearray()
        self.reads = 0

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        self.buf += data
        if self.buf.endswith(_END) and not self.done.done():
            done = b"data: [DONE]" in self.buf
            self.done.set_result((self.buf.count(b"data:"), done, self.reads))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result((self.buf.count(b"data:"), False, self.reads))


async def _one(port: int, request: bytes, timeout_s: float) -> tuple[int, bool, int]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, bool, int]] = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _Stream(done), HOST, port)
    try:
        transport.write(request)
        return await asyncio.wait_for(done, timeout_s)
    finally:
        transport.close()


async def _streams(port: int, n: int, chunks: int, timeout_s: float) -> tuple[int, int, int]:
    """(SSE events received, streams complete, the client's socket reads)."""
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": chunks,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (HOST.encode(), port, len(body), body)
    )
    results = await asyncio.gather(
        *(_one(port, request, timeout_s) for _ in range(n)), return_exceptions=True
    )
    events = sum(r[0] for r in results if isinstance(r, tuple))
    complete = sum(1 for r in results if isinstance(r, tuple) and r[1])
    reads = sum(r[2] for r in results if isinstance(r, tuple))
    return events, complete, reads


def _cpu(pids: Callable[[], list[int]]) -> float:
    total = 0.0
    for pid in pids():
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def _calls(pids: list[int]) -> tuple[int, int]:
    """Read-like and write-like system calls of ``pids`` so far (libuv reads and writes
    sockets with read/readv and write/writev, which these count)."""
    reads = writes = 0
    for pid in pids:
        try:
            fields = dict(
                line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines()
            )
        except (OSError, ValueError):
            continue
        reads += int(fields.get("syscr", 0))
        writes += int(fields.get("syscw", 0))
    return reads, writes


def _tcp_counters() -> dict[str, int]:
    """The machine's TCP counters (/proc/net/snmp and netstat: segments, ACK kinds)."""
    out: dict[str, int] = {}
    for name in ("/proc/net/snmp", "/proc/net/netstat"):
        try:
            lines = Path(name).read_text().splitlines()
        except OSError:
            continue
        for head, values in zip(lines[::2], lines[1::2], strict=False):
            prefix, _, keys = head.partition(": ")
            if prefix not in ("Tcp", "TcpExt"):
                continue
            for key, value in zip(keys.split(), values.partition(": ")[2].split(), strict=False):
                if value.lstrip("-").isdigit():
                    out[key] = int(value)
    return out


_SEGMENT_KEYS = ("OutSegs", "DelayedACKs", "TCPPureAcks", "TCPHPAcks", "TCPAutoCorking")


def _minus(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] - b[0], a[1] - b[1]


def run_round(
    target: str,
    port: int,
    proxy_pids: Callable[[], list[int]],
    sim_pid: int,
    streams: int,
    chunks: int,
) -> Round:
    pc0, sc0, n0 = _calls(proxy_pids()), _calls([sim_pid]), _tcp_counters()
    m0, p0, s0, t0 = machine_cpu()[0], _cpu(proxy_pids), cpu_seconds(sim_pid), time.monotonic()
    events, complete, reads = asyncio.run(_streams(port, streams, chunks, 60.0))
    wall = time.monotonic() - t0
    proxy, sim, machine = _cpu(proxy_pids) - p0, cpu_seconds(sim_pid) - s0, machine_cpu()[0] - m0
    return Round(
        target,
        events,
        complete,
        reads,
        wall,
        proxy,
        sim,
        machine - proxy - sim,
        _minus(_calls(proxy_pids()), pc0),
        _minus(_calls([sim_pid]), sc0),
        {k: v - n0.get(k, 0) for k, v in _tcp_counters().items() if k in _SEGMENT_KEYS},
    )


def _node_config(tmp: Path, sim_url: str, router: dict[str, object] | None = None) -> Path:
    data_dir = tmp / "node-data"
    data_dir.mkdir()
    config = tmp / "hanode.toml"
    config.write_text(
        node_config_toml(
            name="chunks",
            data_dir=data_dir,
            router_port=free_port(),
            metrics_port=free_port(),
            replicas=[{"name": "sim0", "model": MODEL, "url": sim_url, "engine": "vllm"}],
            # All the streams at once (the default, 32 a replica, would queue half of them).
            sections={
                "health": {"interval_s": 1.0},
                "router": {"max_concurrency": 1024, **(router or {})},
            },
        )
    )
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chunk_cost", description=__doc__)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--tpot-ms", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round of 64 x 100 chunks")
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy on the node (one round)")
    parser.add_argument("--native", action="store_true", help="with --profile: C frames too")
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="also run a node from another checkout (e.g. `git archive REV | tar -x -C DIR`)",
    )
    parser.add_argument(
        "--router-setting",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a [router] setting of the hanode node only (e.g. stream_continuation=false)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.chunks = 1, 100
    nginx_bin = None if args.no_nginx else shutil.which("nginx") or "/usr/sbin/nginx"
    if nginx_bin is not None and not Path(nginx_bin).exists():
        nginx_bin = None
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="hanode-chunks-") as tmp_name:
        tmp = Path(tmp_name)
        with ProcGroup(tmp) as group:
            sim_args = ("--model", MODEL, "--ttft-ms", "0", "--tpot-ms", str(args.tpot_ms))
            sim = group.sim("sim", *sim_args, "--capacity", "1024")
            node = group.node("hanode", _node_config(tmp, sim.url, dict(args.router_setting)))
            _wait_healthy(node.ops_url)
            targets: list[tuple[str, int, Callable[[], list[int]]]] = [
                ("direct", sim.port, lambda: []),
                ("hanode", node.router_port, lambda: [node.pid, *child_pids(node.pid)]),
            ]
            if args.baseline is not None:
                targets.append(_baseline_node(group, tmp, sim.url, args.baseline.resolve()))
            floor_port = free_port()
            floor = group.command(
                "floor",
                [sys.executable, "-m", "bench.chunk_floor", str(floor_port), str(sim.port)],
            )
            wait_until(lambda: "listening" in floor.output(), 10.0, 0.05, "the floor relay")
            targets.append(("floor", floor_port, lambda: [floor.pid]))
            if nginx_bin is not None:
                nginx = Nginx(nginx_bin, tmp / "nginx", free_port(), [sim.port])
                nginx.start(group)
                targets.append(("nginx", nginx.port, nginx.pids))
            # A warm-up round each: pooled connections, the interpreter's first paths.
            for _, port, _ in targets:
                asyncio.run(_streams(port, 8, 20, 30.0))
            rounds: dict[str, list[Round]] = {name: [] for name, _, _ in targets}
            for _ in range(args.rounds):
                for name, port, pids in targets:
                    r = run_round(name, port, pids, sim.pid, args.streams, args.chunks)
                    rounds[name].append(r)
            if args.profile:
                _profile(node.pid, node.router_port, args.streams, args.chunks, tmp, args.native)
    _report(rounds, args)
    bad = [r for rs in rounds.values() for r in rs if r.complete != args.streams]
    return 1 if bad else 0


def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=JSON, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value  # a bare string


def _wait_healthy(ops_url: str) -> None:
    def healthy() -> bool:
        _, _, body = http_get(ops_url + "/status")
        reps = json.loads(body).get("replicas", [])
        return bool(reps) and all(r.get("health") == "healthy" for r in reps)

    wait_until(healthy, 30.0, 0.1, "the simulator healthy in hanode")


def _baseline_node(
    group: ProcGroup, tmp: Path, sim_url: str, tree: Path
) -> tuple[str, int, Callable[[], list[int]]]:
    """A node run from another checkout's ``hanode`` package, same configuration."""
    base = tmp / "baseline"
    base.mkdir()
    config = _node_config(base, sim_url)
    boot = (
        f"import runpy, sys; sys.path.insert(0, {str(tree)!r}); "
        "runpy.run_module('hanode', run_name='__main__', alter_sys=True)"
    )
    proc = group.command("baseline", [sys.executable, "-c", boot, "run", "--config", str(config)])

    def listening() -> dict[str, int] | None:
        for line in proc.output().splitlines():
            if line.startswith("{") and '"listening"' in line:
                event: dict[str, int] = json.loads(line)
                return event
        return None

    event = wait_until(listening, 30.0, 0.1, f"the baseline node from {tree}")
    _wait_healthy(f"http://{HOST}:{event['metrics_port']}")
    return "baseline", int(event["router_port"]), lambda: [proc.pid, *child_pids(proc.pid)]


def _profile(pid: int, port: int, streams: int, chunks: int, tmp: Path, native: bool) -> None:
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        print(f"no py-spy at {py_spy}")
        return
    out = tmp / "profile.txt"
    spy = start_record(str(py_spy), pid, 4, out, native=native)
    time.sleep(0.5)
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        asyncio.run(_streams(port, streams, chunks, 60.0))
    spy.wait(30)
    prof = load_profile(out)
    if prof.error:
        print(f"profile: {prof.error}")
        return
    print(f"\npy-spy, node self time ({prof.total} samples):")
    for name, count in prof.by_function.most_common(25):
        print(f"  {100 * count / prof.total:5.1f}%  {name}")
    print("inclusive:")
    for name, count in prof.inclusive.most_common(60):
        if "hanode/" in name or "httptools" in name or native:
            print(f"  {100 * count / prof.total:5.1f}%  {name}")
    for name, count in prof.syscalls.most_common(10):
        print(f"  {100 * count / prof.total:5.1f}%  system call {name}")


def _report(rounds: dict[str, list[Round]], args: argparse.Namespace) -> None:
    print(
        f"{args.streams} streams x {args.chunks} tokens, tpot {args.tpot_ms:g} ms, "
        f"{args.rounds} round(s); medians; µs of CPU per SSE event received"
    )
    print(
        f"{'target':<8} {'events':>7} {'complete':>9} {'proxy µs':>9} {'sim µs':>8} "
        f"{'rest µs':>8} {'proxy r/w':>10} {'sim r/w':>10} {'client r':>8} {'wall s':>7}"
    )
    direct_sim = statistics.median(r.sim_us for r in rounds["direct"])
    for name, rs in rounds.items():
        events = statistics.median(r.events for r in rs)
        complete = min(r.complete for r in rs)
        proxy = statistics.median(r.proxy_us for r in rs)
        sim = statistics.median(r.sim_us for r in rs)
        wall = statistics.median(r.wall_s for r in rs)
        rest = statistics.median(r.other_us for r in rs)
        mid = sorted(rs, key=lambda r: r.proxy_us)[len(rs) // 2]  # its system calls
        extra = f"   sim {sim - direct_sim:+.1f} vs direct" if name != "direct" else ""
        print(
            f"{name:<8} {events:>7.0f} {complete:>5}/{args.streams:<3} {proxy:>9.1f} "
            f"{sim:>8.1f} {rest:>8.1f} {mid.per_event(mid.proxy_calls):>10} "
            f"{mid.per_event(mid.sim_calls):>10} {mid.client_reads / max(mid.events, 1):>8.2f} "
            f"{wall:>7.2f}{extra}"
        )
    print("r/w: read and write system calls per event; rest: the machine's other CPU per event")
    print(
        "the machine's TCP segments per event (loopback: every segment is sent and received here):"
    )
    for name, rs in rounds.items():
        mid = sorted(rs, key=lambda r: r.proxy_us)[len(rs) // 2]
        n = max(mid.events, 1)
        counts = "  ".join(f"{k} {mid.tcp.get(k, 0) / n:.2f}" for k in _SEGMENT_KEYS)
        print(f"  {name:<8} {counts}")


if __name__ == "__main__":
    sys.exit(main())
