"""Consensus write ceiling: how many commits a second the live cluster takes when clients push.

``threads`` clients call the gRPC API's ``ResetBreaker`` in a loop, spread over every node (a
follower hands the command to the leader, as ``hanodectl`` on any node does). Each call is one
``reset_breaker`` command that must be committed by a majority and applied before it returns,
so the leader's commit-index delta over the window is the rate consensus sustained. Closed
breakers are what is reset (nothing is tripped in this window), so routing does not change.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.cluster.harness import Cluster
from bench.harness import HOST, percentile


@dataclass(slots=True)
class CeilingSample:
    threads: int
    duration_s: float
    commits: int
    calls_ok: int
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.commits / self.duration_s if self.duration_s else float("nan")

    @property
    def p50_ms(self) -> float:
        return percentile(sorted(self.latencies_ms), 50)

    @property
    def p99_ms(self) -> float:
        return percentile(sorted(self.latencies_ms), 99)


def _client(
    port: int, replica: str, stop: threading.Event, lat: list[float], errors: Counter[str]
) -> None:
    import grpc

    from hanode._proto.hanode.v1 import control_pb2 as pb
    from hanode._proto.hanode.v1 import control_pb2_grpc

    channel = grpc.insecure_channel(f"{HOST}:{port}")
    stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
    request = pb.ReplicaRequest(replica=replica)
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                stub.ResetBreaker(request, timeout=5.0)
                lat.append((time.monotonic() - t0) * 1e3)
            except grpc.RpcError as exc:
                errors[str(exc.code())] += 1
                stop.wait(0.05)
    finally:
        channel.close()


def measure_ceiling(c: Cluster, threads: int, duration_s: float) -> CeilingSample:
    leader = c.node(c.wait_leader(c.nodes, 10.0))
    stop = threading.Event()
    lat: list[float] = []
    errors: Counter[str] = Counter()
    workers = [
        threading.Thread(
            target=_client,
            args=(
                c.nodes[i % len(c.nodes)].api_port,
                c.replicas[i % len(c.replicas)],
                stop,
                lat,
                errors,
            ),
            daemon=True,
        )
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    time.sleep(1.0)  # every client connected and calling
    ci0, t0, n0 = leader.commit_index(), time.monotonic(), len(lat)
    time.sleep(duration_s)
    ci1, t1, n1 = leader.commit_index(), time.monotonic(), len(lat)
    stop.set()
    for w in workers:
        w.join(10.0)
    sample = CeilingSample(threads, t1 - t0, ci1 - ci0, n1 - n0, errors)
    sample.latencies_ms = lat[n0:n1]
    return sample
