"""GPU memory early warning: act before the engine runs out of memory, not after.

An OOM costs a failed request and often a restarted engine, while GPU memory climbs over
seconds, so the gate acts on the way up: PREPARE raises a capacity event (someone may add a
replica), REDUCE cuts traffic, REMOVE takes the replica out of the pool. REMOVE has hysteresis:
a replica just under the remove mark would otherwise flap in and out with every scrape.
"""

from __future__ import annotations

import enum
import math


class GpuLevel(enum.StrEnum):
    NORMAL = "normal"
    PREPARE = "prepare"  # raise a capacity event
    REDUCE = "reduce"  # cut traffic
    REMOVE = "remove"  # out of the pool


class GpuMemoryGate:
    """Level of one GPU from its used-memory fraction (0..1), fed once per scrape.

    Thresholds are "at or above". Once REMOVE, the level stays REMOVE until the fraction drops
    below ``recover``; other levels follow the fraction directly. An unknown fraction (None,
    NaN) keeps the current level: a failed scrape is not news about memory.
    """

    __slots__ = ("level", "prepare", "recover", "reduce", "remove")

    def __init__(
        self,
        prepare: float = 0.80,
        reduce: float = 0.90,
        remove: float = 0.95,
        recover: float = 0.90,
    ) -> None:
        if not (0.0 < prepare <= reduce <= remove and recover <= remove):
            raise ValueError(
                "need 0 < prepare <= reduce <= remove and recover <= remove, got "
                f"prepare={prepare} reduce={reduce} remove={remove} recover={recover}"
            )
        self.prepare = prepare
        self.reduce = reduce
        self.remove = remove
        self.recover = recover
        self.level = GpuLevel.NORMAL

    def classify(self, frac: float) -> GpuLevel:
        """The level for ``frac`` without hysteresis."""
        if frac >= self.remove:
            return GpuLevel.REMOVE
        if frac >= self.reduce:
            return GpuLevel.REDUCE
        if frac >= self.prepare:
            return GpuLevel.PREPARE
        return GpuLevel.NORMAL

    def update(self, frac: float | None) -> tuple[GpuLevel, GpuLevel | None]:
        """Feed one reading; return ``(level, previous level if it changed else None)``."""
        current = self.level
        if frac is None or math.isnan(frac):
            return current, None
        if current is GpuLevel.REMOVE and frac >= self.recover:
            return current, None
        new = self.classify(frac)
        if new is current:
            return current, None
        self.level = new
        return new, current

    def __repr__(self) -> str:
        return f"GpuMemoryGate(level={self.level.value})"
