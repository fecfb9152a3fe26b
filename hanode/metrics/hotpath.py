"""Lock-free request metrics for the hot path, exported by a collector at scrape time.

prometheus_client's counters and histograms take a lock on every update; on a path that costs
tens of microseconds per request that shows. Here an update is a dict lookup and an integer
add, done only on the event loop thread; the scrape (in a worker thread) copies the dicts,
which CPython does atomically under the GIL.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector


class LabeledCounter:
    __slots__ = ("documentation", "label_names", "name", "values")

    def __init__(self, name: str, documentation: str, label_names: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = tuple(label_names)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def get(self, labels: tuple[str, ...]) -> float:
        return self.values.get(labels, 0.0)

    def family(self) -> CounterMetricFamily:
        fam = CounterMetricFamily(self.name, self.documentation, labels=self.label_names)
        for labels, value in dict(self.values).items():
            fam.add_metric(list(labels), value)
        return fam


class LabeledHistogram:
    __slots__ = ("buckets", "documentation", "label_names", "name", "series")

    def __init__(
        self,
        name: str,
        documentation: str,
        label_names: Sequence[str],
        buckets: Sequence[float],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = tuple(label_names)
        self.buckets = tuple(sorted(buckets))
        # per label set: [count per bucket (+Inf last)..., sum]
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.buckets) + 2)
        row[bisect_left(self.buckets, value)] += 1.0
        row[-1] += value

    def family(self) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)
        for labels, row in dict(self.series).items():
            row = list(row)
            cumulative = 0.0
            buckets = []
            for bound, count in zip(self.buckets, row, strict=False):
                cumulative += count
                buckets.append((repr(float(bound)), cumulative))
            cumulative += row[len(self.buckets)]
            buckets.append(("+Inf", cumulative))
            fam.add_metric(list(labels), buckets, row[-1])
        return fam


class HotPathCollector(Collector):
    def __init__(self, *metrics: LabeledCounter | LabeledHistogram) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        for metric in self._metrics:
            yield metric.family()
