"""Issue 16, finding 8: how long bracket-heavy bodies hold the event loop, before and after.

    .venv/bin/python scripts/measure_json_scan.py [--old PATH_TO_OLD_validation.py]

Prints, per body, the time ``parse_inference_request`` takes (the event loop is blocked for
all of it), then ``/health`` latency on a real front door on 127.0.0.1 while two clients send
the 3.9 MB body of the finding over and over. ``--old`` loads another validation module (e.g.
``git show HEAD~1:hanode/router/validation.py > /tmp/old.py``) for the "before" numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from hanode.http.server import HttpServer
from hanode.metrics.registry import NodeMetrics
from hanode.pool.replica import AdminState, HealthLevel, Observation, ReplicaSpec, Role
from hanode.pool.snapshot import PoolSnapshot, ReplicaState
from hanode.router import frontdoor, validation
from hanode.router.frontdoor import FrontDoor, RouterSettings

SIZE = 3_900_000


def _array_of(block: bytes) -> bytes:
    head = b'{"model":"m","prompt":"x","extra":['
    n = (SIZE - len(head)) // (len(block) + 1)
    return head + b",".join([block] * n) + b"]}"


BODIES = {
    "33-deep chains (the finding)": _array_of(b"[" * 33 + b"]" * 33),
    "31-deep chains": _array_of(b"[" * 30 + b"]" * 30),
    "1.3M empty lists": _array_of(b"[]"),
    "1.3M strings": _array_of(b'""'),
    "strings holding brackets": _array_of(b'["a["]'),
    "3.9 MB of text": b'{"model":"m","prompt":"' + b"hello world " * 325_000 + b'"}',
    "chat, 40 messages": b'{"model":"m","messages":['
    + b",".join([b'{"role":"user","content":"hi [x] {y}"}'] * 40)
    + b"]}",
    "chat, 1 message": b'{"model":"m","messages":[{"role":"user","content":"hi"}]}',
}


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("old_validation", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_validation"] = module
    spec.loader.exec_module(module)
    return module


def parse_times(module: ModuleType) -> None:
    limits = module.RequestLimits()
    for name, raw in BODIES.items():
        reps = 3 if len(raw) > 100_000 else 20_000
        start = time.perf_counter()
        outcome = "accepted"
        for _ in range(reps):
            try:
                module.parse_inference_request(raw, False, limits)
            except module.RequestError as err:
                outcome = err.message[:48]
        ms = (time.perf_counter() - start) / reps * 1e3
        print(f"  {name:30s} {len(raw):>9,d} B {ms:10.3f} ms  {outcome}")


def _blast(port: int, raw: bytes, stop: threading.Event) -> None:
    head = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(raw)
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(head + raw)
            s.recv(65536)


def _probe(port: int, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port)) as s:
            start = time.perf_counter()
            s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            s.recv(65536)
            out.append(time.perf_counter() - start)


async def health_under_attack(parse: Callable[..., Any], seconds: float) -> list[float]:
    view = _View()
    door = FrontDoor(view, RouterSettings(pin_seeds=False), NodeMetrics())
    frontdoor.parse_inference_request = parse  # type: ignore[attr-defined]
    server = HttpServer(door.handle)
    _, port = await server.listen("127.0.0.1", 0)
    stop = threading.Event()
    latencies: list[float] = []
    raw = BODIES["33-deep chains (the finding)"]
    threads = [threading.Thread(target=_blast, args=(port, raw, stop)) for _ in range(2)]
    threads.append(threading.Thread(target=_probe, args=(port, stop, latencies)))
    for t in threads:
        t.start()
    await asyncio.sleep(seconds)
    stop.set()
    for t in threads:
        await asyncio.to_thread(t.join)
    await server.close()
    door.close()
    return latencies


class _View:
    def __init__(self) -> None:
        spec = ReplicaSpec("a", "m", "http://127.0.0.1:9", engine="vllm")
        state = ReplicaState(
            spec, Role.ACTIVE, AdminState.ENABLED, Observation(level=HealthLevel.HEALTHY), 1.0
        )
        self.snapshot = PoolSnapshot.build(1, {"a": state})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", help="another validation.py to compare with")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    modules = [("now", validation)]
    if args.old:
        modules.insert(0, ("old", _load(str(Path(args.old)))))
    for label, module in modules:
        print(f"{label}: parse_inference_request (the event loop is blocked this long)")
        parse_times(module)
        lat = asyncio.run(health_under_attack(module.parse_inference_request, args.seconds))
        lat.sort()
        print(
            f"  /health under two clients sending the 3.9 MB body: n={len(lat)} "
            f"p50={statistics.median(lat) * 1e3:.1f} ms "
            f"p99={lat[int(len(lat) * 0.99) - 1] * 1e3 if lat else 0:.1f} ms "
            f"max={max(lat, default=0) * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
