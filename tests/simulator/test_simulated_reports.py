"""The simulator's reports, as tpas's protocol layer sees them: every kind, every format."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from urllib.parse import unquote

import pytest

from tests.simulator.conftest import AS_ID, KEY, NOW
from tpas.protocol import (
    SIGNED_PARAMETERS,
    BodyFormat,
    Location,
    Uplink,
    check_report,
    parse,
    parse_time,
    verify_report,
)
from tpas.simulator import Fleet, Planner, decode_reading
from tpas.simulator.traffic import Faults, Mix, Outcome, Shot

FORMATS = [pytest.param(f, id=f.value) for f in BodyFormat]
KINDS = [
    pytest.param("uplink=1", "uplink", id="uplink"),
    pytest.param("join=1", "join_request", id="join_request"),
    pytest.param("location=1", "location", id="location"),
    pytest.param("notification=1", "notification", id="notification"),
]


def planner(
    fmt: BodyFormat = BodyFormat.JSON,
    mix: str = "uplink=90,location=4,notification=4,join=2",
    faults: str = "",
    devices: int = 4,
    seed: int = 7,
) -> Planner:
    """A planner over a small fleet, seeded."""
    rng = random.Random(seed)
    return Planner(
        Fleet(devices, rng),
        as_id=AS_ID,
        key=KEY,
        fmt=fmt,
        mix=Mix.parse(mix),
        faults=Faults.parse(faults),
        max_drift=120.0,
        rng=rng,
    )


def checked(shot: Shot, fmt: BodyFormat, now_offset: float = 0.0) -> tuple[bool, str | None]:
    """tpas's verdict on a shot, received ``now_offset`` seconds after ``NOW``."""
    result = check_report(
        shot.request.body,
        fmt,
        shot.request.query,
        [KEY],
        as_id=AS_ID,
        now=NOW + timedelta(seconds=now_offset),
        max_drift=120.0,
    )
    reason = result.verdict.reason.value if result.verdict.reason else None
    return result.verdict.ok, reason


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("mix", "kind"), KINDS)
def test_every_report_kind_verifies_in_every_format(mix: str, kind: str, fmt: BodyFormat) -> None:
    """A simulated report of each kind, in each format, passes tpas's check and decodes
    to its kind."""
    plan = planner(fmt, mix)
    for step in range(12):  # several devices and states (resets, joins, drift)
        shot = plan.next(NOW + timedelta(seconds=step))
        result = check_report(
            shot.request.body,
            fmt,
            shot.request.query,
            [KEY],
            as_id=AS_ID,
            now=NOW + timedelta(seconds=step),
            max_drift=120.0,
        )
        assert result.verdict.ok, result.verdict.detail
        assert result.model is not None
        assert result.model.kind == kind == shot.kind
        verdict = verify_report(parse(shot.request.body, fmt), shot.request.query, [KEY])
        assert verdict.ok, verdict.detail


def test_every_expectation_agrees_with_the_verifier() -> None:
    """Over a long mixed run with every fault, each shot's expected answer is the one
    tpas's verifier gives (duplicates aside, which are the server's to detect)."""
    plan = planner(
        BodyFormat.JSON,
        faults="duplicate=0.1,late=0.1,bad-token=0.1,out-of-window=0.1,clock-skew=20",
        devices=6,
    )
    seen: set[str] = set()
    for step in range(400):
        shot = plan.next(NOW + timedelta(seconds=step / 10))
        ok, reason = checked(shot, BodyFormat.JSON, step / 10)
        if shot.expect.outcome is Outcome.REFUSED:
            assert (ok, reason) == (False, shot.expect.reason), shot.fault
        else:
            assert ok, (shot.fault, reason)
        seen.add(f"{shot.fault}:{shot.expect}")
    assert seen >= {
        "bad-token:401 token_mismatch",
        "out-of-window:401 stale_time",
        "out-of-window:401 future_time",
        "late:2xx stored",
        "duplicate:2xx stored",
        "None:2xx stored",
    }


@pytest.mark.parametrize(
    ("skew", "expected"),
    [
        pytest.param(30.0, None, id="inside-window"),
        pytest.param(-30.0, None, id="inside-window-behind"),
        pytest.param(300.0, "future_time", id="ahead"),
        pytest.param(-300.0, "stale_time", id="behind"),
    ],
)
def test_clock_skew_is_refused_only_beyond_the_window(skew: float, expected: str | None) -> None:
    """A clock skew inside the server's window is accepted, beyond it refused as stale or
    future, and the planner expects exactly that."""
    shot = planner(faults=f"clock-skew={skew}").next(NOW)
    assert checked(shot, BodyFormat.JSON) == (expected is None, expected)
    assert shot.expect.reason == expected


def test_a_late_frame_is_old_in_its_body_and_fresh_in_its_query() -> None:
    """A late uplink carries Late=1 and an old body Time, yet verifies: the query Time is
    what the window applies to."""
    shot = planner(faults="late=1").next(NOW)
    assert isinstance(shot.report, Uplink)
    assert shot.report.late == 1
    body_time = parse_time(shot.report.time)
    assert body_time is not None
    assert NOW - body_time >= timedelta(seconds=30)
    assert checked(shot, BodyFormat.JSON) == (True, None)


def test_the_query_looks_like_thingparks() -> None:
    """The query carries the signed parameters in ThingPark's order, Token last, with the
    Time's ':' and '+' percent-encoded."""
    shot = planner().next(NOW)
    pairs = [part.partition("=") for part in shot.request.query.split("&")]
    assert [name for name, _, _ in pairs] == [*SIGNED_PARAMETERS, "Token"]
    raw_time = {name: value for name, _, value in pairs}["Time"]
    assert "%3A" in raw_time
    assert "%2B" in raw_time
    assert parse_time(unquote(raw_time)) == NOW


def test_the_sensor_payload_follows_the_documented_format() -> None:
    """Uplink payloads decode with the documented format, to plausible values; the
    documented example reads as documented."""
    plan = planner(mix="uplink=1")
    for step in range(20):
        shot = plan.next(NOW + timedelta(seconds=step))
        assert isinstance(shot.report, Uplink)
        assert shot.report.fport == 2
        assert shot.report.payload_hex is not None
        reading = decode_reading(shot.report.payload_hex)
        assert -20 < reading.temperature < 50
        assert 0 <= reading.humidity <= 100
        assert 3000 <= reading.battery_mv <= 3700
    example = decode_reading("01092e5a0e1002")
    assert (example.temperature, example.humidity, example.battery_mv) == (23.5, 45.0, 3600)
    assert example.moving
    assert not example.button


def test_radio_metadata_is_plausible_and_drifts() -> None:
    """Uplinks are heard by 1 to 3 gateways, best first, with a spreading factor of 7 to
    12, and the RSSI changes from frame to frame."""
    plan = planner(mix="uplink=1", devices=1)
    rssis = set()
    gateway_counts = set()
    for step in range(60):
        shot = plan.next(NOW + timedelta(seconds=step))
        report = shot.report
        assert isinstance(report, Uplink)
        gateways = report.gateways
        assert 1 <= len(gateways) <= 3
        assert report.dev_lrr_cnt == len(gateways)
        levels = [g.rssi for g in gateways if g.rssi is not None]
        assert len(levels) == len(gateways)
        assert levels == sorted(levels, reverse=True)
        assert report.rssi == gateways[0].rssi
        assert report.spreading_factor in range(7, 13)
        rssis.add(report.rssi)
        gateway_counts.add(len(gateways))
    assert len(rssis) > 1
    assert len(gateway_counts) > 1


def test_frame_counters_count_up_and_restart_with_a_join() -> None:
    """A device's FCntUp counts up by one per uplink and restarts at 0 after a Join."""
    fleet = Fleet(1, random.Random(3))
    device = fleet.devices[0]
    counters = [device.uplink(NOW).fcnt_up for _ in range(3)]
    assert counters == [0, 1, 2]
    device.join_request(NOW)
    assert device.uplink(NOW).fcnt_up == 0


def test_location_reports_move() -> None:
    """Successive location reports of a device are at different places."""
    device = Fleet(1, random.Random(5)).devices[0]
    first = device.location(NOW)
    later = device.location(NOW + timedelta(minutes=5))
    assert isinstance(first, Location)
    assert first.dev_lat is not None
    assert later.dev_lat is not None
    assert first.dev_lon is not None
    assert later.dev_lon is not None
    moved = math.hypot(later.dev_lat - first.dev_lat, later.dev_lon - first.dev_lon)
    assert moved > 0


def test_a_device_never_repeats_a_body_time() -> None:
    """Reports a device makes within the same millisecond still get distinct body Times
    (the server would take the second for a duplicate)."""
    device = Fleet(1, random.Random(9)).devices[0]
    times = [
        device.notification(NOW).time,
        device.notification(NOW).time,
        device.location(NOW).time,
        device.uplink(NOW).time,
    ]
    assert len(set(times)) == len(times)
