"""In-process metrics with a Prometheus text rendering (QUALITY.md REL-7).

Small on purpose: counters with labels, histograms with fixed buckets, gauges read from a
callback. Label values come from tpas's own vocabularies (reason codes, report kinds,
application names), never from request data, so cardinality stays bounded.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

__all__ = ["Counter", "Gauge", "Histogram", "LabelledGauge", "Metrics", "Registry"]

log = logging.getLogger("tpas.metrics")

DELIVERY_BUCKETS: Final = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SKEW_BUCKETS: Final = (-60.0, -10.0, -2.0, -0.5, 0.0, 0.5, 2.0, 10.0, 60.0)


def _number(value: float) -> str:
    """Exact text for counts (no exponent for large integers), ``repr`` for other floats."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


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
            lines.append(f"{self.name}{_labels(self.labels, key)} {_number(value)}")
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
        i = bisect_left(self.buckets, value)  # the first bound >= value
        if i < len(self.counts):
            self.counts[i] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            running += count
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {_number(self.total)}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


@dataclass
class Gauge:
    """A value read when metrics are rendered."""

    name: str
    help: str
    read: Callable[[], float]

    def render(self) -> list[str]:
        try:
            value = self.read()
        except Exception:  # a gauge that cannot be read must not break /metrics
            log.exception("cannot read gauge %s", self.name)
            value = math.nan
        text = "NaN" if math.isnan(value) else _number(value)
        head = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        return [*head, f"{self.name} {text}"]


@dataclass
class LabelledGauge:
    """Current values per label, set by whoever observes them (e.g. outbox depth)."""

    name: str
    help: str
    label: str
    values: dict[str, float] = field(default_factory=dict)

    def set_all(self, values: dict[str, float]) -> None:
        """Replace every value at once."""
        self.values = dict(values)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        for key, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels((self.label,), (key,))} {_number(value)}")
        return lines


_M = TypeVar("_M", Counter, Histogram, Gauge, LabelledGauge)


class Registry:
    """An ordered collection of metrics rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._metrics: list[Counter | Histogram | Gauge | LabelledGauge] = []

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
        self.downlinks_queued = r.add(
            Counter("tpas_downlinks_queued_total", "Downlinks accepted into the outbox.",
                    ("application",))
        )  # fmt: skip
        self.downlink_attempts = r.add(
            Counter("tpas_downlink_attempts_total", "Submissions to the network server.",
                    ("outcome",))
        )  # fmt: skip
        self.downlink_sent_seconds = r.add(
            Histogram("tpas_downlink_queued_to_sent_seconds",
                      "From queued to the delivery report saying sent.", DELIVERY_BUCKETS)
        )  # fmt: skip
        self.outbox_depth = r.add(
            LabelledGauge("tpas_outbox_downlinks", "Downlinks in the outbox by status.",
                          "status")
        )  # fmt: skip
