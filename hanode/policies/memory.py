"""GPU memory: one pressure figure per replica that means the same on every engine, and growth.

vLLM (``--gpu-memory-utilization``, 0.9 by default), SGLang (``--mem-fraction-static``) and TGI
take their share of device memory when they start, so NVML reads about 90% used from the first
second whatever the load. For them the pressure the 80/90/95% marks act on is the use of the
KV cache *inside* that reservation. Engines that allocate as they go (llama.cpp's server with
its fixed context, any other OpenAI-compatible server) keep NVML used/total.

The OOM risk a reservation does not cover is device memory growing past it: another process on
the GPU, or a leak after sleep/wake. :class:`GrowthWatch` learns a baseline once the replica is
healthy (re-learned after a reload or a wake) and reports the growth since, a separate signal
with its own event. Pure: the checker feeds readings, nothing here reads a clock or NVML.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class PressureSource(enum.StrEnum):
    KV = "kv"  # KV-cache use inside the engine's reservation
    DEVICE = "device"  # NVML (or the engine's) used / total


def reserving(adapter_reserves: bool, reported_reservation: float | None) -> bool:
    """Does this replica's engine reserve its memory at start?

    A reservation the engine reports (vLLM's ``cache_config_info`` label
    ``gpu_memory_utilization``) decides; 0 there means it does not (hanode's simulator with
    ``--reserve-gpu 0``). Without one the engine kind decides.
    """
    if reported_reservation is not None and math.isfinite(reported_reservation):
        return reported_reservation > 0.0
    return adapter_reserves


def _fraction(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return min(1.0, max(0.0, value))


def memory_pressure(
    reserves: bool, kv_usage: float | None, device_used: float | None
) -> tuple[float | None, PressureSource]:
    """The pressure figure (0..1, ``None`` unknown) and where it came from.

    An engine that reserves but exports no KV gauge (TGI) has unknown pressure: its device
    reading is the reservation, not load, and must not set off the marks.
    """
    if reserves:
        return _fraction(kv_usage), PressureSource.KV
    return _fraction(device_used), PressureSource.DEVICE


@dataclass(frozen=True, slots=True)
class GrowthChange:
    """The growth watch crossed its mark (``raised``) or fell back below its clear mark."""

    raised: bool
    growth: float
    baseline: float


class GrowthWatch:
    """Device memory grown past the baseline learned when the device's replicas became healthy.

    One watch per device (a GPU index, or a replica whose engine reports its own memory),
    shared by the replicas on it (``members``): their reservations all belong to the baseline,
    so it is learned only while every member serves, and forgotten whenever one stops serving
    (a reload, a restart or a wake reallocates) or :meth:`relearn` is called. A reading below
    the baseline lowers it (memory freed is not growth). The change is raised at ``mark`` and
    cleared below half of it, so a reading that hovers at the mark does not flap.
    """

    __slots__ = ("_raised", "_serving", "baseline", "mark", "members")

    def __init__(self, mark: float, members: frozenset[str]) -> None:
        if not (math.isfinite(mark) and 0.0 < mark <= 1.0):
            raise ValueError(f"growth mark must be within (0, 1], got {mark}")
        if not members:
            raise ValueError("a growth watch needs at least one member")
        self.mark = mark
        self.members = members
        self.baseline: float | None = None
        self._raised = False
        self._serving: dict[str, bool] = {}

    @property
    def raised(self) -> bool:
        return self._raised

    def relearn(self) -> None:
        """Forget the baseline: the next reading with every member serving is the new one."""
        self.baseline = None

    def update(
        self, member: str, used: float | None, serving: bool
    ) -> tuple[float | None, GrowthChange | None]:
        """One member's reading: ``(growth or None, change or None)``."""
        self._serving[member] = serving
        if not serving:
            self.baseline = None
        if not all(self._serving.get(m, False) for m in self.members):
            return self._clear_if_raised()
        reading = _fraction(used)
        if reading is None:
            return None, None
        if self.baseline is None or reading < self.baseline:
            self.baseline = reading
        growth = round(reading - self.baseline, 6)  # 0.95 - 0.90 is 0.0499999...: not below
        change = None
        if not self._raised and growth >= self.mark:
            self._raised = True
            change = GrowthChange(True, growth, self.baseline)
        elif self._raised and growth < self.mark / 2.0:
            self._raised = False
            change = GrowthChange(False, growth, self.baseline)
        return growth, change

    def _clear_if_raised(self) -> tuple[None, GrowthChange | None]:
        """A member is (re)loading: what grew was a process that is now being replaced."""
        if not self._raised:
            return None, None
        self._raised = False
        return None, GrowthChange(False, 0.0, self.baseline or 0.0)
