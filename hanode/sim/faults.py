"""Fault rates and the per-request decision drawn from them (pure; the RNG is injected)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

FAULT_KINDS: Final = (
    "oom",
    "context",
    "ratelimit",
    "busy",
    "hang",
    "crash",
    "stream-death",
    "stream-stall",
    "empty",
    "slow",
    "leak",  # the request leaks LEAK_STEP of device memory past the reservation
)

LEAK_STEP: Final = 0.01  # of the device, per leaking request

# Faults that replace the answer, strongest first: when several are drawn, the first one wins.
TERMINAL_FAULTS: Final = ("crash", "hang", "oom", "context", "ratelimit", "busy")


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What to do to one request. ``terminal`` is one of TERMINAL_FAULTS or None."""

    terminal: str | None = None
    stream_death: bool = False
    stream_stall: bool = False  # the stream goes silent (connection open) where death would cut it
    empty: bool = False
    slow: bool = False
    leak: bool = False

    @property
    def any(self) -> bool:
        return (
            self.terminal is not None
            or self.stream_death
            or self.stream_stall
            or self.empty
            or self.slow
            or self.leak
        )


NO_FAULT: Final = FaultDecision()


def validate_rates(rates: dict[str, object]) -> dict[str, float]:
    """Check a {kind: rate} mapping from a user; raises ValueError with a readable message."""
    out: dict[str, float] = {}
    for kind, rate in rates.items():
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise ValueError(f"rate of {kind!r} must be a number, got {rate!r}")
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"rate of {kind!r} must be within 0..1, got {rate!r}")
        out[kind] = float(rate)
    return out


class FaultRates:
    """Current rates; ``decide`` draws each non-zero fault independently."""

    __slots__ = ("_active", "_rates", "_rng")

    def __init__(self, rng: random.Random, rates: dict[str, float] | None = None) -> None:
        self._rng = rng
        self._rates: dict[str, float] = {}
        self._active: tuple[tuple[str, float], ...] = ()
        if rates:
            self.update(rates)

    def update(self, rates: dict[str, float]) -> None:
        merged = dict(self._rates)
        merged.update(validate_rates(dict(rates)))
        self._rates = {k: v for k, v in merged.items() if v > 0.0}
        self._active = tuple((k, self._rates[k]) for k in FAULT_KINDS if k in self._rates)

    def clear(self) -> None:
        self._rates = {}
        self._active = ()

    def as_dict(self) -> dict[str, float]:
        return {kind: self._rates.get(kind, 0.0) for kind in FAULT_KINDS}

    def decide(self) -> FaultDecision:
        active = self._active
        if not active:
            return NO_FAULT
        rng = self._rng
        drawn = {kind for kind, rate in active if rate >= 1.0 or rng.random() < rate}
        if not drawn:
            return NO_FAULT
        terminal = next((k for k in TERMINAL_FAULTS if k in drawn), None)
        return FaultDecision(
            terminal=terminal,
            stream_death="stream-death" in drawn,
            stream_stall="stream-stall" in drawn,
            empty="empty" in drawn,
            slow="slow" in drawn,
            leak="leak" in drawn,
        )
