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


_L2_PATH_RE = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,255}")


def l2_path(value: str | None) -> tuple[str | None, str]:
    """An absolute URL path on the replica (no host, no query): where the test prompt goes."""
    if value is None:
        return value, ""
    if not _L2_PATH_RE.fullmatch(value):
        return value, f"must be a path like /v1/chat/completions (no host, no query), got {value!r}"
    return value, ""
