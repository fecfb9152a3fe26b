"""Gauges of the node's own state, read when Prometheus scrapes: its view of the cluster
(quorum, leader, members) and the processes its supervisor runs (state, restarts, crash
loops). The alert rules in deploy/prometheus rest on these (no leader, no quorum, crash loop).

The sources are plain callables so this module knows neither consensus nor actuators.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["ClusterFacts", "NodeStateCollector", "ProcessFacts"]


@dataclass(frozen=True, slots=True)
class ClusterFacts:
    has_quorum: bool
    is_leader: bool
    leader_known: bool
    members: int
    connected: int  # members this node is connected to (itself excluded)


@dataclass(frozen=True, slots=True)
class ProcessFacts:
    state: str  # hanode.pool.lifecycle.Observed value
    restarts: int  # restarts inside the crash-loop window


PROCESS_STATES = (
    "unknown", "starting", "running", "sleeping", "stopped", "backoff", "crash_loop",
)  # fmt: skip


class NodeStateCollector(Collector):
    def __init__(
        self,
        cluster: Callable[[], ClusterFacts | None],
        processes: Callable[[], Mapping[str, ProcessFacts]],
    ) -> None:
        self._cluster = cluster
        self._processes = processes

    def collect(self) -> Iterator[GaugeMetricFamily]:
        facts = self._cluster()
        gauges = {
            "hanode_cluster_has_quorum": "1 when this node sees a Raft quorum",
            "hanode_cluster_is_leader": "1 when this node is the Raft leader",
            "hanode_cluster_leader_known": "1 when this node knows a leader",
            "hanode_cluster_members": "Raft members, this node included",
            "hanode_cluster_members_connected": "Raft members this node is connected to",
        }
        if facts is not None:  # a standalone node exports none of them
            values = (
                facts.has_quorum, facts.is_leader, facts.leader_known, facts.members,
                facts.connected,
            )  # fmt: skip
            for (name, doc), value in zip(gauges.items(), values, strict=True):
                yield GaugeMetricFamily(name, doc, value=float(value))
        state = GaugeMetricFamily(
            "hanode_replica_process_state",
            "1 for the state the supervisor last saw of a replica process it runs",
            labels=["replica", "state"],
        )
        restarts = GaugeMetricFamily(
            "hanode_replica_restarts_in_window",
            "Restarts of a replica inside the crash-loop window ([recovery])",
            labels=["replica"],
        )
        loop = GaugeMetricFamily(
            "hanode_replica_crash_loop",
            "1 while a replica is stopped as a crash loop (until `hanodectl restart`)",
            labels=["replica"],
        )
        for name, proc in self._processes().items():
            for s in PROCESS_STATES:
                state.add_metric([name, s], 1.0 if proc.state == s else 0.0)
            restarts.add_metric([name], float(proc.restarts))
            loop.add_metric([name], 1.0 if proc.state == "crash_loop" else 0.0)
        yield from (state, restarts, loop)
