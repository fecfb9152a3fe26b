"""One set of metrics per node from several processes (the node and its data-plane workers).

Each worker sends its registry as plain :data:`Family` tuples (:func:`families_of`); the node
exports the sum (:class:`MergedCollector`), so ``/metrics`` looks the same with 1 worker or 16.
How samples combine: counters and histograms add up (a request counted in any worker is one
request of the node); ``_created`` timestamps take the earliest; gauges add up where they
count things (capacity, requests in service, queue lengths) and otherwise take the worst
value across workers (the highest pressure or burn rate, the lowest success ratio).

When a worker exits, its last counters and histograms are kept (:class:`Retired`) so the node's
totals never go down when a worker is replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# (sample name, sorted label pairs, value)
Sample = tuple[str, tuple[tuple[str, str], ...], float]
# (family name, documentation, type, unit, samples)
Family = tuple[str, str, str, str, tuple[Sample, ...]]

# Gauges that count things: the node's value is the workers' sum. Every other gauge takes the
# worst value across workers (max; min for ratios, where lower is worse).
ADDITIVE_GAUGES = frozenset(
    {"hanode_admission_capacity", "hanode_admission_in_service", "hanode_admission_queue_length"}
)
_CUMULATIVE = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


def families_of(registry: CollectorRegistry) -> list[Family]:
    """The registry's current samples as plain, picklable tuples."""
    out: list[Family] = []
    for metric in registry.collect():
        samples = tuple(
            (s.name, tuple(sorted(s.labels.items())), float(s.value)) for s in metric.samples
        )
        out.append((metric.name, metric.documentation, metric.type, metric.unit, samples))
    return out


def _combine(family: str, typ: str, sample: str, old: float, new: float) -> float:
    if sample.endswith("_created"):
        return min(old, new)
    if typ in _CUMULATIVE or family in ADDITIVE_GAUGES:
        return old + new
    if family.endswith("_ratio"):
        return min(old, new)
    return max(old, new)


def merge(sources: Iterable[Iterable[Family]]) -> list[Family]:
    """Combine families of the same name across sources (see the module docstring)."""
    heads: dict[str, tuple[str, str, str]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for families in sources:
        for name, doc, typ, unit, samples in families:
            if name not in heads:
                heads[name] = (doc, typ, unit)
                values[name] = {}
            table = values[name]
            for sample, labels, value in samples:
                key = (sample, labels)
                old = table.get(key)
                table[key] = value if old is None else _combine(name, typ, sample, old, value)
    return [
        (name, doc, typ, unit, tuple((s, lb, v) for (s, lb), v in values[name].items()))
        for name, (doc, typ, unit) in heads.items()
    ]


@dataclass(slots=True)
class Retired:
    """The cumulative samples of workers that exited, so node totals stay monotonic."""

    families: list[Family] = field(default_factory=list)

    def fold(self, families: Iterable[Family]) -> None:
        kept = [
            (name, doc, typ, unit, tuple(s for s in samples if not s[0].endswith("_created")))
            for name, doc, typ, unit, samples in families
            if typ in _CUMULATIVE
        ]
        self.families = merge([self.families, kept])


class MergedCollector(Collector):
    """The node's own registry plus what ``others()`` returns (workers' and retired)."""

    def __init__(self, own: CollectorRegistry, others: Callable[[], list[list[Family]]]) -> None:
        self._own = own
        self._others = others

    def collect(self) -> Iterator[Metric]:
        for name, doc, typ, unit, samples in merge([families_of(self._own), *self._others()]):
            metric = Metric(name, doc, typ, unit)
            for sample, labels, value in samples:
                metric.add_sample(sample, dict(labels), value)
            yield metric


def merged_registry(
    own: CollectorRegistry, others: Callable[[], list[list[Family]]]
) -> CollectorRegistry:
    """A registry to expose: ``own`` merged with the other processes' families."""
    exposed = CollectorRegistry(auto_describe=False)
    exposed.register(MergedCollector(own, others))
    return exposed
