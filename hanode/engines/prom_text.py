"""Tiny parser for the Prometheus text exposition format, as inference engines emit it.

Only what hanode needs to read an engine's /metrics page: samples, labels, TYPE comments and
histogram buckets. It never raises on bad input: a line it cannot read is skipped, because a
half-broken metrics page must degrade one signal, not take down a health checker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Labels = tuple[tuple[str, str], ...]  # sorted by label name
Buckets = tuple[tuple[float, float], ...]  # (le, cumulative count), sorted by le
Aggregate = Literal["sum", "max", "min", "mean"]

_ESCAPES = {"n": "\n", "\\": "\\", '"': '"'}

# One label pair. Whitespace around pairs lives in exactly one place each: two adjacent [ \t]*
# (or findall restarting a leading [ \t]* at every blank) backtrack quadratically on long runs.
_PAIR = r'([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"'
_PAIR_RE = re.compile(_PAIR)
_LABEL = r"[ \t]*" + _PAIR
_SAMPLE_RE = re.compile(
    r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    rf"(?:[ \t]*\{{(?P<labels>(?:{_LABEL}[ \t]*,)*(?:{_LABEL})?)[ \t]*\}}[ \t]*|[ \t]+)"
    r"(?P<value>\S+)(?:[ \t]+(?P<ts>[^\s#]\S*))?"
    r"[ \t]*(?:#.*)?"  # an OpenMetrics exemplar, ignored
)
_ESCAPE_RE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Labels
    value: float
    timestamp: float | None = None  # as written (milliseconds in the 0.0.4 format)

    def label(self, key: str) -> str | None:
        for k, v in self.labels:
            if k == key:
                return v
        return None

    def matches(self, selector: Mapping[str, str] | None) -> bool:
        return not selector or all(self.label(k) == v for k, v in selector.items())


class MetricsPage:
    """One scrape, indexed by sample name; a repeated (name, labels) keeps the last value."""

    __slots__ = ("_by_name", "types")

    def __init__(self, by_name: Mapping[str, Mapping[Labels, Sample]], types: Mapping[str, str]):
        self._by_name = by_name
        self.types = types  # metric family name -> "gauge" | "counter" | "histogram" | ...

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def names(self) -> frozenset[str]:
        return frozenset(self._by_name)

    def samples(self, name: str, labels: Mapping[str, str] | None = None) -> tuple[Sample, ...]:
        found = self._by_name.get(name, {})
        return tuple(s for s in found.values() if s.matches(labels))

    def value(
        self, name: str, labels: Mapping[str, str] | None = None, agg: Aggregate = "sum"
    ) -> float | None:
        """Aggregate ``name`` over the label sets matching ``labels``; NaN samples are ignored.

        ``None`` when nothing matches, so "metric absent" differs from "metric is zero".
        """
        values = [s.value for s in self.samples(name, labels) if not math.isnan(s.value)]
        if not values:
            return None
        if agg == "max":
            return max(values)
        if agg == "min":
            return min(values)
        total = sum(values)
        return total / len(values) if agg == "mean" else total

    def buckets(self, base: str, labels: Mapping[str, str] | None = None) -> Buckets | None:
        """Cumulative buckets of histogram ``base``, summed over matching label sets."""
        counts: dict[float, float] = {}
        for s in self.samples(base + "_bucket", labels):
            le = _parse_float(s.label("le") or "")
            if le is None or math.isnan(le) or math.isnan(s.value):
                continue
            counts[le] = counts.get(le, 0.0) + s.value
        return tuple(sorted(counts.items())) if counts else None


def parse(text: str) -> MetricsPage:
    """Parse an exposition page; unreadable lines are skipped, never raised."""
    by_name: dict[str, dict[Labels, Sample]] = {}
    types: dict[str, str] = {}
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line[1:].split(None, 3)
            if len(parts) >= 3 and parts[0] == "TYPE":
                types[parts[1]] = parts[2].lower()
            continue
        sample = _parse_sample(line)
        if sample is not None:
            by_name.setdefault(sample.name, {})[sample.labels] = sample
    return MetricsPage(by_name, types)


@dataclass(frozen=True, slots=True)
class Quantile:
    """A quantile read from histogram buckets: ``value`` is PromQL's linear interpolation, and
    all that is known for sure is that the truth lies in ``[lo, hi]``, the edges of its bucket
    (``hi`` is ``inf`` in the ``+Inf`` bucket, where ``value`` is the top finite edge)."""

    value: float
    lo: float
    hi: float


def histogram_quantile(prev: Buckets | None, cur: Buckets | None, q: float) -> float | None:
    """The q-quantile of the observations made between two scrapes (PromQL semantics).

    ``prev=None`` means "since the process started". A counter that went down means the engine
    restarted, so ``cur`` alone is used. ``None`` when there are no new observations or no
    ``+Inf`` bucket. Raises ``ValueError`` only for q outside [0, 1] (a caller bug).
    """
    found = histogram_bucket(prev, cur, q)
    return found.value if found is not None else None


def histogram_bucket(prev: Buckets | None, cur: Buckets | None, q: float) -> Quantile | None:
    """:func:`histogram_quantile` with the edges of the bucket the quantile falls in: a
    coarse bucket (vLLM's first TPOT bucket is 10 ms wide) says far less than its midpoint."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    now = _clean(cur)
    before = _clean(prev)
    delta = {le: c - before.get(le, 0.0) for le, c in now.items()}
    if any(d < 0 for d in delta.values()):
        delta = now
    return _quantile(q, sorted(delta.items()))


def _clean(buckets: Buckets | None) -> dict[float, float]:
    if not buckets:
        return {}
    return {
        le: c
        for le, c in buckets
        if not math.isnan(le) and le != -math.inf and math.isfinite(c) and c >= 0
    }


def _quantile(q: float, buckets: list[tuple[float, float]]) -> Quantile | None:
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        return None
    monotonic: list[tuple[float, float]] = []
    running = 0.0
    for le, count in buckets:  # scrapes can tear; cumulative counts must not decrease
        running = max(running, count)
        monotonic.append((le, running))
    total = monotonic[-1][1]
    if total <= 0:
        return None
    rank = q * total
    b = next((i for i, (_, c) in enumerate(monotonic[:-1]) if c >= rank), len(monotonic) - 1)
    if b == len(monotonic) - 1:
        top = monotonic[-2][0]  # in the +Inf bucket: the best we can say is "above the top"
        return Quantile(top, top, math.inf)
    end, count = monotonic[b]
    if b == 0 and end <= 0:
        return Quantile(end, -math.inf, end)
    start = 0.0
    if b > 0:
        start, below = monotonic[b - 1]
        count -= below
        rank -= below
    if count <= 0:
        return Quantile(start, start, end)
    result = start + (end - start) * (rank / count)
    return Quantile(result, start, end) if math.isfinite(result) else None


def _parse_float(text: str) -> float | None:
    if not text or "_" in text:  # Python accepts "1_0"; Prometheus does not
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _parse_sample(line: str) -> Sample | None:
    m = _SAMPLE_RE.fullmatch(line)
    if m is None:
        return None
    name, body, raw_value, raw_ts = m.group("name", "labels", "value", "ts")
    value = _parse_float(raw_value)
    if value is None:
        return None
    timestamp = None
    if raw_ts is not None:
        timestamp = _parse_float(raw_ts)
        if timestamp is None or not math.isfinite(timestamp):
            return None
    labels: Labels = ()
    if body:
        found = {k: _unescape(v) if "\\" in v else v for k, v in _PAIR_RE.findall(body)}
        labels = tuple(sorted(found.items()))
    return Sample(name, labels, value, timestamp)


def _unescape(value: str) -> str:
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), value)
