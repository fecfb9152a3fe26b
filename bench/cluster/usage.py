"""What each node of the live cluster costs the machine: resident memory and CPU time.

Read from ``/proc`` for the node's hanode process (and its simulators, counted apart), over a
window: CPU share = CPU-seconds used in the window / window seconds. With those, how many nodes
this machine holds is an estimate anyone can check (:func:`capacity`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from bench.harness import cpu_seconds


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS of /proc/PID/status); 0 when it is gone."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def mem_available_bytes() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_of(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return cpu_seconds(pid)
    return 0.0


@dataclass(slots=True)
class NodeUsage:
    node: str
    rss_bytes: int  # the hanode process, at the end of the window
    cpu_share: float  # of one core, over the window
    sims_rss_bytes: int = 0  # its simulators together (the bench's stand-in for engines)
    sims_cpu_share: float = 0.0


@dataclass(slots=True)
class Capacity:
    nodes_by_memory: int  # nodes (with their simulators) the available memory would hold
    cores: int
    idle_cpu_share: float  # the whole cluster at idle, in cores
    busy_cpu_share: float  # the whole cluster under the traffic window, in cores


def capacity(
    idle: list[NodeUsage], busy: list[NodeUsage], available_bytes: int, cores: int
) -> Capacity | None:
    """How far this machine is from full, from the measured nodes (None without samples):
    the running nodes plus as many more as the available memory holds at the largest node's
    footprint (hanode and its simulators)."""
    if not idle:
        return None
    per_node = max(u.rss_bytes + u.sims_rss_bytes for u in idle)
    more = max(0, available_bytes) // per_node if per_node > 0 else 0
    return Capacity(
        nodes_by_memory=len(idle) + int(more),
        cores=cores,
        idle_cpu_share=sum(u.cpu_share + u.sims_cpu_share for u in idle),
        busy_cpu_share=sum(u.cpu_share + u.sims_cpu_share for u in busy),
    )
