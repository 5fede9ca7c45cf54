"""What to send next: the report mix, the injected faults, and the answer each one expects.

The :class:`Planner` turns the fleet into a stream of :class:`Shot` s: one signed request,
ready to post, with the answer it must get (docs/simulator.md, "Faults"):

========================  ==================================================  ==================
fault                     what the simulator does                             expected answer
========================  ==================================================  ==================
(none)                    a fresh report, signed at ``now + clock-skew``      2xx ``stored``
``duplicate=F``           sends the same request (same bytes) again once the  2xx ``stored``,
                          first answer came                                   then ``duplicate``
                                                                              with the same id
``late=F``                an uplink with ``Late=1`` and a body ``Time`` 30 s  2xx ``stored``
                          to 15 min old; the query Time is fresh
``bad-token=F``           the Token's last hex digit changed                  401 token_mismatch
``out-of-window=F``       query Time ``max-drift + 60`` s in the past, or in  401 stale_time /
                          the future (alternately)                            401 future_time
``clock-skew=S``          every query Time is ``S`` s ahead (negative:        2xx while
                          behind) of the simulator's clock                    ``|S| <= max-drift``,
                                                                              else stale/future
========================  ==================================================  ==================

``F`` is the fraction of shots with that fault (they are exclusive: one fault at most per
shot); ``late`` turns the drawn report into an uplink. ``max-drift`` is the server's
freshness window (tpas's ``max_time_drift``, 120 s by default).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from tpas.errors import InputError
from tpas.protocol import AsKey, BodyFormat, Document
from tpas.simulator.devices import Fleet, VirtualDevice
from tpas.simulator.sender import Answer
from tpas.testing import SignedReport, sign_report

__all__ = [
    "DEFAULT_MIX",
    "Expectation",
    "Fault",
    "Faults",
    "Kind",
    "Mix",
    "Outcome",
    "Planner",
    "Shot",
]


class Kind(StrEnum):
    """Report kinds of the mix."""

    UPLINK = "uplink"
    LOCATION = "location"
    NOTIFICATION = "notification"
    JOIN = "join"


class Fault(StrEnum):
    """Faults injected into a fraction of the shots."""

    DUPLICATE = "duplicate"
    LATE = "late"
    BAD_TOKEN = "bad-token"  # noqa: S105 - a fault name, not a secret
    OUT_OF_WINDOW = "out-of-window"


DEFAULT_MIX: Final = "uplink=90,location=4,notification=4,join=2"
_CLOCK_SKEW: Final = "clock-skew"
_OUT_OF_WINDOW_MARGIN: Final = 60.0
_REFUSED: Final = 401  # tpas answers every authentication refusal with 401


def _pairs(text: str, option: str) -> dict[str, float]:
    """``"a=1,b=0.5"`` as a dict of numbers; errors name the option and the item."""
    out: dict[str, float] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or number != number or number in (float("inf"), float("-inf")):
            raise InputError(f"{option}: expected NAME=NUMBER, got {item!r}")
        out[name.strip()] = number
    return out


@dataclass(frozen=True, slots=True)
class Mix:
    """Relative weights of the report kinds."""

    weights: tuple[tuple[Kind, float], ...]

    @classmethod
    def parse(cls, text: str = DEFAULT_MIX) -> Mix:
        """Read ``"uplink=90,location=4,notification=4,join=2"`` (kinds left out: 0)."""
        pairs = _pairs(text, "--mix")
        weights = []
        for name, weight in pairs.items():
            try:
                kind = Kind(name)
            except ValueError:
                known = ", ".join(k.value for k in Kind)
                raise InputError(f"--mix: unknown kind {name!r} (known: {known})") from None
            if weight < 0:
                raise InputError(f"--mix: {name} must not be negative")
            weights.append((kind, weight))
        if sum(w for _, w in weights) <= 0:
            raise InputError("--mix: at least one kind needs a positive weight")
        return cls(tuple(weights))

    def draw(self, rng: random.Random) -> Kind:
        """One kind, at random by weight."""
        kinds = [k for k, _ in self.weights]
        return rng.choices(kinds, weights=[w for _, w in self.weights])[0]

    def __str__(self) -> str:
        return ",".join(f"{k}={w:g}" for k, w in self.weights)


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault fractions, and the network server's clock skew in seconds."""

    rates: tuple[tuple[Fault, float], ...] = ()
    clock_skew: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Faults:
        """Read ``"duplicate=0.02,late=0.01,bad-token=0.01,out-of-window=0.01,clock-skew=30"``."""
        pairs = _pairs(text, "--faults")
        skew = pairs.pop(_CLOCK_SKEW, 0.0)
        rates = []
        for name, rate in pairs.items():
            try:
                fault = Fault(name)
            except ValueError:
                known = ", ".join([*(f.value for f in Fault), _CLOCK_SKEW])
                raise InputError(f"--faults: unknown fault {name!r} (known: {known})") from None
            if not 0 <= rate <= 1:
                raise InputError(f"--faults: {name} is a fraction, 0 to 1")
            rates.append((fault, rate))
        if sum(r for _, r in rates) > 1:
            raise InputError("--faults: the fractions add up to more than 1")
        return cls(tuple(rates), skew)

    def rate(self, fault: Fault) -> float:
        """The fraction of shots with ``fault``."""
        return next((r for f, r in self.rates if f is fault), 0.0)

    def draw(self, rng: random.Random) -> Fault | None:
        """The fault of the next shot, or ``None``."""
        point = rng.random()
        for fault, rate in self.rates:
            if point < rate:
                return fault
            point -= rate
        return None

    def __str__(self) -> str:
        items = [f"{f}={r:g}" for f, r in self.rates if r]
        if self.clock_skew:
            items.append(f"{_CLOCK_SKEW}={self.clock_skew:g}")
        return ",".join(items) or "none"


class Outcome(StrEnum):
    """What the application server should do with a request."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Expectation:
    """The answer a request must get: ``stored``/``duplicate`` (2xx), or a refusal with
    its HTTP status and reason code."""

    outcome: Outcome
    reason: str | None = None
    status: int | None = None
    report_id: int | None = None
    """For a duplicate: the id the first answer gave, when known."""

    def met_by(self, answer: Answer) -> bool:
        """Whether ``answer`` is this one. A server that says less than tpas (no JSON
        body) is judged on its status alone."""
        if self.outcome is Outcome.REFUSED:
            if answer.status != self.status:
                return False
            error = answer.body.get("error") if answer.body is not None else None
            return error is None or error == self.reason
        if not answer.ok:
            return False
        said = answer.status_text
        if said is None:
            return True
        if said != self.outcome.value:
            return False
        return self.report_id is None or answer.report_id == self.report_id

    def __str__(self) -> str:
        if self.outcome is Outcome.REFUSED:
            return f"{self.status} {self.reason}"
        return f"2xx {self.outcome}"


@dataclass(frozen=True, slots=True)
class Shot:
    """One planned request."""

    device: VirtualDevice
    kind: str
    """The API's type name: uplink, join_request, location, notification."""
    fault: Fault | None
    report: Document
    request: SignedReport
    expect: Expectation


class Planner:
    """Draws the next device (round robin), report kind and fault, and signs the request."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        as_id: str,
        key: AsKey,
        fmt: BodyFormat,
        mix: Mix,
        faults: Faults,
        max_drift: float,
        rng: random.Random,
        downlink_counter: Callable[[str], int] | None = None,
    ) -> None:
        if faults.rate(Fault.OUT_OF_WINDOW) and max_drift <= 0:
            raise InputError("--faults: out-of-window needs the server's window (--max-drift)")
        self.fleet = fleet
        self.as_id = as_id
        self.key = key
        self.fmt = fmt
        self.mix = mix
        self.faults = faults
        self.max_drift = max_drift
        self.rng = rng
        self.downlink_counter = downlink_counter
        self._next_device = 0
        self._stale_next = True

    def expectation_for_offset(self, offset: float) -> Expectation:
        """What a report whose query Time is ``offset`` s off the server's clock gets."""
        if self.max_drift > 0 and offset > self.max_drift:
            return Expectation(Outcome.REFUSED, "future_time", _REFUSED)
        if self.max_drift > 0 and offset < -self.max_drift:
            return Expectation(Outcome.REFUSED, "stale_time", _REFUSED)
        return Expectation(Outcome.STORED)

    def next(self, now: datetime) -> Shot:
        """The next shot, signed at ``now`` (the simulator's clock)."""
        device = self.fleet.devices[self._next_device]
        self._next_device = (self._next_device + 1) % len(self.fleet)
        kind = self.mix.draw(self.rng)
        fault = self.faults.draw(self.rng)
        if fault is Fault.LATE:
            kind = Kind.UPLINK
        if self.downlink_counter is not None:
            device.fcnt_dn = self.downlink_counter(device.dev_eui)
        report: Document
        if kind is Kind.UPLINK:
            late_by = self.rng.uniform(30.0, 900.0) if fault is Fault.LATE else 0.0
            report = device.uplink(now, late_by=late_by)
        elif kind is Kind.LOCATION:
            report = device.location(now)
        elif kind is Kind.NOTIFICATION:
            report = device.notification(now)
        else:
            report = device.join_request(now)
        offset = self.faults.clock_skew
        if fault is Fault.OUT_OF_WINDOW:
            margin = self.max_drift + _OUT_OF_WINDOW_MARGIN
            offset = -margin if self._stale_next else margin
            self._stale_next = not self._stale_next
        expect = self.expectation_for_offset(offset)
        signed = sign_report(
            report,
            key=self.key,
            as_id=self.as_id,
            time=now + timedelta(seconds=offset),
            fmt=self.fmt,
        )
        if fault is Fault.BAD_TOKEN:
            token = signed.token
            tampered = token[:-1] + ("1" if token[-1] == "0" else "0")
            query = signed.query.removesuffix(f"&Token={token}") + f"&Token={tampered}"
            signed = replace(signed, query=query, token=tampered)
            if expect.outcome is Outcome.STORED:
                expect = Expectation(Outcome.REFUSED, "token_mismatch", _REFUSED)
        return Shot(device, report.kind, fault, report, signed, expect)
