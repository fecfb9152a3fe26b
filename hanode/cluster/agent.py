"""The node's agent: reports what it observes of its own replicas to the cluster.

Writes happen only when an observation changes beyond a hysteresis, or on a slow heartbeat,
so consensus traffic stays bounded as replicas grow. The decision is a pure function;
:class:`ObservationReporter` only remembers what was last sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from hanode.cluster.document import Command, observation_doc
from hanode.pool.replica import Observation


@dataclass(frozen=True, slots=True)
class ReportHysteresis:
    heartbeat_s: float  # [cluster] heartbeat_s: the config's, so no default here
    gpu: float = 0.02  # absolute change in GPU memory fraction
    kv: float = 0.05  # absolute change in KV usage
    queue: float = 2.0  # absolute change in queue depth...
    queue_rel: float = 0.25  # ...and relative
    latency_rel: float = 0.20  # relative change in latency or TTFT


def _moved(old: float | None, new: float | None, absolute: float, rel: float = 0.0) -> bool:
    if (old is None) != (new is None):
        return True
    if old is None or new is None:
        return False
    delta = abs(new - old)
    if rel and delta < rel * max(abs(old), 1e-9):
        return False
    return delta >= absolute


def should_report(
    last: Observation | None,
    new: Observation,
    last_sent_at: float,
    now: float,
    h: ReportHysteresis,
) -> bool:
    if last is None or now - last_sent_at >= h.heartbeat_s:
        return True
    if new.level != last.level or new.gpu_removed != last.gpu_removed:
        return True
    return (
        _moved(last.gpu_mem_frac, new.gpu_mem_frac, h.gpu)
        or _moved(last.kv_usage, new.kv_usage, h.kv)
        or _moved(last.queue_depth, new.queue_depth, h.queue, h.queue_rel)
        or _moved(last.latency_ms, new.latency_ms, 0.0, h.latency_rel)
        or _moved(last.ttft_ms, new.ttft_ms, 0.0, h.latency_rel)
        or _moved(last.tpot_ms, new.tpot_ms, 0.0, h.latency_rel)
        or _moved(last.ttft_lo_ms, new.ttft_lo_ms, 0.0, h.latency_rel)
        or _moved(last.tpot_lo_ms, new.tpot_lo_ms, 0.0, h.latency_rel)
        or _moved(last.gpu_growth, new.gpu_growth, h.gpu)
    )


class ObservationReporter:
    """Implements the health checker's sink: ``observe(name, obs)``."""

    def __init__(
        self,
        send: Callable[[Command], None],
        hysteresis: ReportHysteresis,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._send = send
        self._h = hysteresis
        self._clock = clock
        self._wall = wall
        self._last: dict[str, tuple[Observation, float]] = {}

    def observe(self, name: str, obs: Observation) -> None:
        now = self._clock()
        last = self._last.get(name)
        if not should_report(
            last[0] if last else None, obs, last[1] if last else 0.0, now, self._h
        ):
            return
        self._last[name] = (obs, now)
        self._send(
            {"op": "observe", "replica": name, "obs": observation_doc(obs), "ts": self._wall()}
        )

    def sent(self, name: str) -> Observation | None:
        """The observation of ``name`` last sent, if any."""
        last = self._last.get(name)
        return last[0] if last is not None else None

    def forget(self, name: str) -> None:
        """Send the next observation of ``name`` whatever it is (e.g. after a lost write)."""
        self._last.pop(name, None)
