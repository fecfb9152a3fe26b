"""Value checks several sections share: names, and a floor for periods and timeouts."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


# Intervals and timeouts below this are mistakes (1e-9 s spun a probe loop at 65% CPU).
MIN_PERIOD_S = 0.05


def period(value: float) -> tuple[float, str]:
    """A lower bound for periods and timeouts that gt=0 alone lets through."""
    if value < MIN_PERIOD_S:
        return value, f"must be at least {MIN_PERIOD_S:g} (seconds), got {value:g}"
    return value, ""
