"""In-process metrics with a Prometheus text rendering (QUALITY.md REL-7).

Small on purpose: counters with labels, histograms with fixed buckets, gauges read from a
callback. Label values come from tpas's own vocabularies (reason codes, report kinds,
application names), never from request data, so cardinality stays bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

__all__ = ["Counter", "Gauge", "Histogram", "Metrics", "Registry"]

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SKEW_BUCKETS: Final = (-60.0, -10.0, -2.0, -0.5, 0.0, 0.5, 2.0, 10.0, 60.0)


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(
        f'{n}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for n, v in zip(names, values, strict=True)
    )
    return "{" + pairs + "}"


@dataclass
class Counter:
    """A monotonically increasing count, per label combination."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        """Add ``amount`` for these label values."""
        self.values[label_values] = self.values.get(label_values, 0.0) + amount

    def get(self, *label_values: str) -> float:
        """The current count for these label values."""
        return self.values.get(label_values, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for key, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.labels, key)} {value:g}")
        return lines


@dataclass
class Histogram:
    """Observations counted into cumulative buckets."""

    name: str
    help: str
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            running += count
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {self.total:g}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


@dataclass
class Gauge:
    """A value read when metrics are rendered."""

    name: str
    help: str
    read: Callable[[], float]

    def render(self) -> list[str]:
        value = self.read()
        text = "NaN" if math.isnan(value) else f"{value:g}"
        head = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        return [*head, f"{self.name} {text}"]


_M = TypeVar("_M", Counter, Histogram, Gauge)


class Registry:
    """An ordered collection of metrics rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._metrics: list[Counter | Histogram | Gauge] = []

    def add(self, metric: _M) -> _M:
        """Register and return ``metric``."""
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        """The exposition text."""
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


class Metrics:
    """The metrics tpas records, in one registry."""

    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.accepted = r.add(
            Counter("tpas_reports_accepted_total", "Reports stored.", ("application", "kind"))
        )
        self.duplicates = r.add(
            Counter("tpas_reports_duplicate_total", "Reports already stored.", ("application",))
        )
        self.refused = r.add(
            Counter("tpas_reports_refused_total", "Reports refused, by reason.", ("reason",))
        )
        self.spooled = r.add(
            Counter("tpas_reports_spooled_total", "Reports written to the local spool.")
        )
        self.replayed = r.add(
            Counter("tpas_reports_replayed_total", "Spooled reports committed to storage.")
        )
        self.request_latency = r.add(
            Histogram("tpas_report_request_seconds", "Report request latency.", LATENCY_BUCKETS)
        )
        self.commit_batch = r.add(
            Histogram("tpas_commit_batch_size", "Reports per storage commit.", BATCH_BUCKETS)
        )
        self.commit_latency = r.add(
            Histogram("tpas_commit_seconds", "Storage commit latency.", LATENCY_BUCKETS)
        )
        self.clock_skew = r.add(
            Histogram(
                "tpas_ns_clock_skew_seconds",
                "Our clock minus the network server's query Time, per verified report.",
                SKEW_BUCKETS,
            )
        )
