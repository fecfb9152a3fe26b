"""A stand-in data-plane worker for the WorkerPlane tests: it speaks the channel and nothing
else. It says ready, opens breaker "r" when it is worker 0, reports in-flight tries and a
counter (again after each snapshot), echoes every message the node sends as an event, and
stops on drain."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

from prometheus_client import CollectorRegistry, Counter

from hanode.metrics.merge import families_of
from hanode.workers.channel import Channel, ChannelClosed
from hanode.workers.messages import Hello, Report


async def main(fd: int) -> int:
    ch = await Channel.over(socket.socket(fileno=fd))
    kind, hello = await ch.recv()
    assert kind == "hello" and isinstance(hello, Hello)
    reg = CollectorRegistry()
    Counter("fake_served", "requests", registry=reg).inc(10 * (hello.index + 1))
    ch.send("ready", os.getpid())
    ch.send("event", ("hello", f"worker-{hello.index}", repr(hello.breakers), {}))
    if hello.index == 0:
        ch.send("opened", ("r", "gpu_oom", time.monotonic() + 30.0))
    ch.send("inflight", {"r": 2 + hello.index})
    ch.send("traffic", [("r", True, 0.01, None, time.monotonic(), None)])
    ch.send("report", Report(families_of(reg), {}, 10 * (hello.index + 1), 0))
    while True:
        try:
            kind, payload = await ch.recv()
        except ChannelClosed:
            return 0
        ch.send("event", ("echo", f"worker-{hello.index}", f"{kind} {payload!r}", {}))
        if kind == "snapshot":  # a fresh report, holding no breaker open
            ch.send("report", Report(families_of(reg), {}, 10 * (hello.index + 1), 0))
        if kind == "drain":
            ch.send("drained", 0)
            await ch.drain()
            return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]))))
