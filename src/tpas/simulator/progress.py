"""Counting answers and showing them: a live line while the run lasts, a summary at the end.

:class:`Tally` counts every answer against its expectation; :class:`Progress` shows the
counts on a stream (stderr): one line redrawn in place when the stream is a terminal,
a line every few seconds otherwise (logs, CI). :func:`render_summary` turns the final
summary (a JSON-ready dict, also what ``--json`` prints) into text.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from tpas.simulator.sender import Answer

__all__ = ["Progress", "Tally", "render_summary"]

_EXAMPLES: Final = 10
_RECENT: Final = 10_000


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (0 when empty)."""
    if not values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(values)))
    return values[rank - 1]


@dataclass(slots=True)
class _FaultCount:
    sent: int = 0
    as_expected: int = 0
    expected: set[str] = field(default_factory=set)


class Tally:
    """Counts of everything sent and answered; ``record`` once per request."""

    def __init__(self) -> None:
        self.sent = 0
        self.accepted = 0
        self.duplicates = 0
        self.refused: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.as_expected = 0
        self.unexpected = 0
        self.refused_as_expected = 0
        self.kinds: Counter[str] = Counter()
        self.faults: dict[str, _FaultCount] = {}
        self.examples: list[dict[str, Any]] = []
        self._latencies: array[float] = array("d")
        self._recent: deque[float] = deque(maxlen=_RECENT)
        self._started = time.monotonic()
        self._ended: float | None = None

    def restart(self) -> None:
        """Count time from now (the run starts)."""
        self._started = time.monotonic()
        self._ended = None

    def finish(self) -> None:
        """Stop the clock (the run ended)."""
        self._ended = time.monotonic()

    @property
    def elapsed(self) -> float:
        """Seconds from the start to the end of the run (or to now, while it runs)."""
        return (self._ended or time.monotonic()) - self._started

    def record(
        self,
        *,
        kind: str,
        label: str | None,
        expected: str,
        answer: Answer,
        matched: bool,
        dev_eui: str,
        fresh: bool = True,
    ) -> None:
        """Count one answer. ``label`` names the fault (``None``: none); ``fresh`` is false
        for a re-sent request (a duplicate), which is not a new report."""
        self.sent += 1
        if fresh:
            self.kinds[kind] += 1
        if answer.status is not None:
            self._latencies.append(answer.latency)
            self._recent.append(answer.latency)
        if answer.status is None:
            self.errors[answer.reason] += 1
        elif answer.ok:
            if answer.status_text == "duplicate":
                self.duplicates += 1
            else:
                self.accepted += 1
        else:
            self.refused[answer.reason] += 1
            if matched:
                self.refused_as_expected += 1
        if matched:
            self.as_expected += 1
        else:
            self.unexpected += 1
            if len(self.examples) < _EXAMPLES:
                got = answer.reason if not answer.ok else f"{answer.status} {answer.status_text}"
                self.examples.append(
                    {"kind": kind, "dev_eui": dev_eui, "fault": label, "expected": expected,
                     "got": got}
                )  # fmt: skip
        if label is not None:
            count = self.faults.setdefault(label, _FaultCount())
            count.sent += 1
            count.as_expected += matched
            count.expected.add(expected)

    def latency_ms(self, *, recent: bool = False) -> dict[str, float]:
        """p50, p99 and max latency in milliseconds (recent answers only, or all)."""
        values = sorted(self._recent if recent else self._latencies)
        return {
            "p50": round(_percentile(values, 0.50) * 1000, 2),
            "p99": round(_percentile(values, 0.99) * 1000, 2),
            "max": round((values[-1] if values else 0.0) * 1000, 2),
        }

    def line(self, extra: str = "") -> str:
        """One line of live progress."""
        elapsed = self.elapsed
        rate = self.sent / elapsed if elapsed > 0 else 0.0
        refused = sum(self.refused.values())
        latency = self.latency_ms(recent=True)
        parts = [
            f"[{elapsed:6.1f}s] sent {self.sent} ({rate:.0f}/s)",
            f"accepted {self.accepted}",
            f"dup {self.duplicates}",
            f"refused {refused} ({self.refused_as_expected} expected)",
        ]
        if self.refused:
            parts.append(" ".join(f"{r}={n}" for r, n in sorted(self.refused.items())))
        if self.errors:
            parts.append("errors " + " ".join(f"{r}={n}" for r, n in sorted(self.errors.items())))
        parts.append(f"unexpected {self.unexpected}")
        parts.append(f"p50 {latency['p50']:.1f} ms p99 {latency['p99']:.1f} ms")
        if extra:
            parts.append(extra)
        return " · ".join(parts)

    @staticmethod
    def _fault(count: _FaultCount) -> dict[str, Any]:
        expected = " or ".join(sorted(count.expected))
        return {"sent": count.sent, "as_expected": count.as_expected, "expected": expected}

    def summary(self) -> dict[str, Any]:
        """Everything counted, JSON-ready."""
        elapsed = self.elapsed
        return {
            "seconds": round(elapsed, 2),
            "sent": self.sent,
            "rate": round(self.sent / elapsed, 1) if elapsed > 0 else 0.0,
            "reports": dict(sorted(self.kinds.items())),
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "refused": dict(sorted(self.refused.items())),
            "refused_as_expected": self.refused_as_expected,
            "errors": dict(sorted(self.errors.items())),
            "as_expected": self.as_expected,
            "unexpected": self.unexpected,
            "latency_ms": self.latency_ms(),
            "faults": {name: self._fault(c) for name, c in sorted(self.faults.items())},
            "unexpected_examples": list(self.examples),
        }


class Progress:
    """Shows a tally on ``stream`` until stopped: redrawn in place on a terminal, else a
    line every ``interval`` seconds. ``extra`` adds text (downlinks, ...) to each line."""

    def __init__(
        self,
        tally: Tally,
        stream: TextIO,
        *,
        live: bool | None = None,
        interval: float | None = None,
        extra: Callable[[], str] | None = None,
    ) -> None:
        self.tally = tally
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.interval = interval if interval is not None else (0.25 if self.live else 5.0)
        self.extra = extra
        self._drawn = False

    def show(self) -> None:
        """Draw the current line."""
        line = self.tally.line(self.extra() if self.extra else "")
        if self.live:
            self.stream.write(f"\r\x1b[K{line}")
            self._drawn = True
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """Print a message line without breaking the live line."""
        self._clear()
        self.stream.write(f"{text}\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False

    async def run(self, stop: asyncio.Event) -> None:
        """Show the line every ``interval`` until ``stop`` is set; then clear it."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if not stop.is_set():
                self.show()
        self._clear()
        self.stream.flush()


def _counts(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def render_summary(summary: Mapping[str, Any]) -> str:
    """The summary as text, one fact per line."""
    latency = summary["latency_ms"]
    refused = summary["refused"]
    lines = [
        f"sent:        {summary['sent']} requests in {summary['seconds']} s "
        f"({summary['rate']}/s); reports: {_counts(summary['reports'])}",
        f"accepted:    {summary['accepted']} stored, {summary['duplicates']} answered duplicate",
        f"refused:     {sum(refused.values())} ({summary['refused_as_expected']} as expected)"
        + (f": {_counts(refused)}" if refused else ""),
    ]
    if summary["errors"]:
        lines.append(f"errors:      {_counts(summary['errors'])}")
    lines.append(
        f"latency:     p50 {latency['p50']} ms, p99 {latency['p99']} ms, max {latency['max']} ms"
    )
    for name, fault in summary["faults"].items():
        lines.append(
            f"fault {name + ':':<15}{fault['as_expected']}/{fault['sent']} answered "
            f"as expected ({fault['expected']})"
        )
    skew = summary.get("clock_skew")
    if skew and skew["seconds"]:
        lines.append(
            f"clock skew:  {skew['seconds']:+g} s on every query Time "
            f"(expected: {skew['expected']})"
        )
    network = summary.get("network_server")
    if network:
        lines.append(
            f"downlinks:   {network['received']} received, {network['accepted']} queued, "
            f"injected {_counts(network['injected'])}, refused {_counts(network['refused'])}, "
            f"{network['delivered']} delivered ({network['confirmed']} DevEUI_downlink_Sent "
            f"acknowledged)"
        )
    lines.append(f"unexpected:  {summary['unexpected']}")
    for example in summary["unexpected_examples"]:
        lines.append(
            f"  {example['kind']} {example['dev_eui']} fault={example['fault'] or '-'}: "
            f"expected {example['expected']}, got {example['got']}"
        )
    return "\n".join(lines)
