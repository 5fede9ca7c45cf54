"""The ReportStore contract: every backend (memory, SQLite, PostgreSQL) behaves the same."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import fields
from typing import Any, Final

import pytest
from msgspec.structs import replace

from tpas.errors import StorageUnavailable
from tpas.storage import NewReport, ReportQuery, ReportStore, StoredReport, StoreOutcome
from tpas.storage.ports import DeviceSummary

MakeStore = Callable[[], ReportStore]

T0 = 1_700_000_000.0
DEV = "70B3D5E75E000001"


def new_report(n: int, **changes: Any) -> NewReport:
    """Report number ``n``: its token, frame key and times are its own."""
    report = NewReport(
        application="farm",
        kind="uplink",
        dev_eui=DEV,
        time=f"2023-11-14T22:13:{n % 60:02d}.000+00:00",
        time_ts=T0 + n,
        received_at=T0 + n + 0.5,
        token=f"token-{n}",
        frame_key=f"{DEV}/uplink/{n}",
        body=b'{"DevEUI_uplink":{"FCntUp":%d}}' % n,
        content_type="application/json",
        fport=2,
        fcnt_up=n,
        payload_hex="00ff",
        rssi=-100.0 - n,
        snr=7.25,
        spreading_factor=7,
        signed_at=T0 + n + 0.25,
    )
    return replace(report, **changes)


# Each key comes with the time it covers: a token signs the query's Time (signed_at), a
# frame key covers the body's Time. A real repeat cannot change one without the other, and
# the stores rely on it (their unique indexes lead with these times).
_COVERED: Final = {"token": "signed_at", "frame_key": "time"}


def twin(report: NewReport, of: NewReport, *keys: str) -> NewReport:
    """``report`` with the given keys of ``of`` (``"token"``, ``"frame_key"``), each with
    the time it covers."""
    return replace(report, **{f: getattr(of, f) for key in keys for f in (key, _COVERED[key])})


def run(store: ReportStore, scenario: Callable[[ReportStore], Awaitable[None]]) -> None:
    """Open ``store``, play ``scenario`` on it, close it (also on failure)."""

    async def main() -> None:
        await store.open()
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


def expected(report: NewReport, report_id: int) -> StoredReport:
    """What reading ``report`` back should give."""
    values = {f.name: getattr(report, f.name) for f in fields(StoredReport) if f.name != "id"}
    if report.dev_eui is not None:
        values["dev_eui"] = report.dev_eui.upper()
    return StoredReport(id=report_id, **values)


async def all_ids(store: ReportStore) -> list[int]:
    """Every stored id, newest first."""
    return [r.id for r in await store.query(ReportQuery(limit=100_000))]


def test_round_trip_keeps_every_field(make_store: MakeStore) -> None:
    """A stored report reads back with every field, its body and content type byte-exact."""
    body = b'<?xml version="1.0"?>\r\n<DevEUI_uplink>\x00\xff\xfe caf\xc3\xa9</DevEUI_uplink>\n'
    report = NewReport(
        application="farm",
        kind="downlink_sent",
        dev_eui="70b3d5e75e00abcd",
        time="2023-11-14T22:13:20.5+01:00",
        time_ts=T0 + 0.125,
        received_at=T0 + 1.75,
        token="a" * 64,
        frame_key="70B3D5E75E00ABCD/downlink_sent/42",
        body=body,
        content_type="text/xml; charset=utf-8",
        fport=223,
        fcnt_up=4_294_967_295,
        fcnt_dn=4_294_967_294,
        payload_hex="0a0B",
        rssi=-120.5,
        snr=-17.25,
        spreading_factor=12,
        lat=48.858370,
        lon=-2.294481,
        correlation_id="corr-1",
    )

    async def scenario(store: ReportStore) -> None:
        [outcome] = await store.add_many([report])
        assert outcome.duplicate is False
        assert await store.get(outcome.id) == expected(report, outcome.id)
        assert await store.get_body(outcome.id) == (body, "text/xml; charset=utf-8")

    run(make_store(), scenario)


def test_optional_fields_read_back_as_none(make_store: MakeStore) -> None:
    """A report without DevEUI, time or radio data reads back with those fields None."""
    report = NewReport(
        application="farm",
        kind="base_station_alarm",
        dev_eui=None,
        time=None,
        time_ts=T0,
        received_at=T0,
        token="t",
        frame_key="alarm/1",
        body=b"",
        content_type="application/json",
    )

    async def scenario(store: ReportStore) -> None:
        [outcome] = await store.add_many([report])
        assert await store.get(outcome.id) == expected(report, outcome.id)
        assert await store.get_body(outcome.id) == (b"", "application/json")

    run(make_store(), scenario)


def test_unknown_id_reads_as_none(make_store: MakeStore) -> None:
    """``get`` and ``get_body`` of an id never stored return None."""

    async def scenario(store: ReportStore) -> None:
        await store.add_many([new_report(1)])
        assert await store.get(987_654) is None
        assert await store.get_body(987_654) is None

    run(make_store(), scenario)


def test_empty_batch_stores_nothing(make_store: MakeStore) -> None:
    """An empty batch gives no outcomes and leaves the store empty."""

    async def scenario(store: ReportStore) -> None:
        assert await store.add_many([]) == []
        assert await all_ids(store) == []

    run(make_store(), scenario)


@pytest.mark.parametrize("same", ["token", "frame_key"], ids=["same-token", "same-frame"])
def test_duplicate_is_stored_once(make_store: MakeStore, same: str) -> None:
    """A report with an already stored token or frame key is a duplicate of the original."""
    original = new_report(1)
    again = twin(new_report(2), original, same)

    async def scenario(store: ReportStore) -> None:
        [first] = await store.add_many([original])
        assert await store.add_many([again]) == [StoreOutcome(first.id, duplicate=True)]
        assert await all_ids(store) == [first.id]
        assert await store.get(first.id) == expected(original, first.id)

    run(make_store(), scenario)


def test_alarms_with_one_frame_key_are_duplicates_whatever_their_time(
    make_store: MakeStore,
) -> None:
    """An alarm without a Time stores its CreationTime as its time, which its frame key
    does not cover: the same frame key with another CreationTime is still a duplicate."""
    alarm = new_report(1, kind="device_alarm", time="2026-11-27T10:00:00.000+00:00")
    again = new_report(
        2, kind="device_alarm", time="2026-11-27T10:05:00.000+00:00", frame_key=alarm.frame_key
    )

    async def scenario(store: ReportStore) -> None:
        [first] = await store.add_many([alarm])
        assert await store.add_many([again]) == [StoreOutcome(first.id, duplicate=True)]
        assert await all_ids(store) == [first.id]

    run(make_store(), scenario)


def test_token_matches_before_frame_key(make_store: MakeStore) -> None:
    """A report colliding with one row by token and another by frame key names the first."""
    by_token, by_frame = new_report(1), new_report(2)
    both = twin(twin(new_report(3), by_token, "token"), by_frame, "frame_key")

    async def scenario(store: ReportStore) -> None:
        _, token_row = await store.add_many([by_frame, by_token])
        assert await store.add_many([both]) == [StoreOutcome(token_row.id, duplicate=True)]

    run(make_store(), scenario)


@pytest.mark.parametrize("same", ["token", "frame_key"], ids=["same-token", "same-frame"])
def test_same_keys_in_another_application_are_stored(make_store: MakeStore, same: str) -> None:
    """Tokens and frame keys are unique per application, not across applications."""
    farm = new_report(1)
    dairy = twin(new_report(2, application="dairy"), farm, same)

    async def scenario(store: ReportStore) -> None:
        first, second = await store.add_many([farm, dairy])
        assert not first.duplicate
        assert not second.duplicate
        assert second.id > first.id

    run(make_store(), scenario)


def test_batch_with_internal_duplicates(make_store: MakeStore) -> None:
    """Twins inside one batch are stored once; outcomes follow the input order."""
    a, b = new_report(1), new_report(2)

    async def scenario(store: ReportStore) -> None:
        outcomes = await store.add_many([a, b, a, twin(new_report(3), b, "token")])
        assert [o.duplicate for o in outcomes] == [False, False, True, True]
        assert outcomes[0].id < outcomes[1].id
        assert outcomes[2].id == outcomes[0].id
        assert outcomes[3].id == outcomes[1].id
        assert sorted(await all_ids(store)) == [outcomes[0].id, outcomes[1].id]

    run(make_store(), scenario)


def test_batch_mixing_new_and_stored_reports(make_store: MakeStore) -> None:
    """Duplicates of earlier batches interleaved with new reports map back in order."""
    old = [new_report(n) for n in range(3)]
    batch = [
        new_report(10),
        old[2],
        new_report(11),
        twin(new_report(12), old[0], "frame_key"),
        new_report(13),
        twin(new_report(14), new_report(11), "token"),
        old[1],
    ]

    async def scenario(store: ReportStore) -> None:
        old_ids = [o.id for o in await store.add_many(old)]
        outcomes = await store.add_many(batch)
        assert [o.duplicate for o in outcomes] == [False, True, False, True, False, True, True]
        assert [outcomes[i].id for i in (1, 3, 5, 6)] == [
            old_ids[2],
            old_ids[0],
            outcomes[2].id,
            old_ids[1],
        ]
        new_ids = [outcomes[i].id for i in (0, 2, 4)]
        assert max(old_ids) < new_ids[0] < new_ids[1] < new_ids[2]

    run(make_store(), scenario)


def test_dev_eui_is_stored_upper_case(make_store: MakeStore) -> None:
    """A lower-case DevEUI is stored and read back upper case."""

    async def scenario(store: ReportStore) -> None:
        [outcome] = await store.add_many([new_report(1, dev_eui="70b3d5e75e00abcd")])
        stored = await store.get(outcome.id)
        assert stored is not None
        assert stored.dev_eui == "70B3D5E75E00ABCD"

    run(make_store(), scenario)


def test_query_returns_newest_first(make_store: MakeStore) -> None:
    """Query results come in descending id order, whatever their times."""
    reports = [new_report(n, time_ts=T0 - n) for n in range(5)]

    async def scenario(store: ReportStore) -> None:
        for report in reports:
            await store.add_many([report])
        found = await store.query(ReportQuery())
        assert [r.token for r in found] == [f"token-{n}" for n in reversed(range(5))]
        assert [r.id for r in found] == sorted((r.id for r in found), reverse=True)

    run(make_store(), scenario)


# Twelve reports: n = 0..11, two applications, three devices, three kinds, time_ts = T0 + n.
DATASET = [
    new_report(
        n,
        application="farm" if n % 2 == 0 else "dairy",
        dev_eui=("70b3d5e75e000001", "70B3D5E75E000002", "70b3d5E75e000003")[n % 3],
        kind=("uplink", "notification", "location", "uplink")[n % 4],
    )
    for n in range(12)
]


@pytest.mark.parametrize(
    ("query", "numbers"),
    [
        (ReportQuery(), list(range(11, -1, -1))),
        (ReportQuery(application="farm"), [10, 8, 6, 4, 2, 0]),
        (ReportQuery(dev_eui="70b3d5e75e000002"), [10, 7, 4, 1]),
        (ReportQuery(dev_eui="70B3D5E75E000003"), [11, 8, 5, 2]),
        (ReportQuery(kind="location"), [10, 6, 2]),
        (ReportQuery(since=T0 + 9), [11, 10, 9]),
        (ReportQuery(until=T0 + 2), [1, 0]),
        (ReportQuery(since=T0 + 3, until=T0 + 6), [5, 4, 3]),
        (ReportQuery(application="dairy", kind="uplink", since=T0 + 4), [11, 7]),
        (ReportQuery(application="farm", dev_eui="70b3d5e75e000001", kind="uplink"), [0]),
        (ReportQuery(limit=2), [11, 10]),
        (ReportQuery(limit=0), []),
        (ReportQuery(application="nobody"), []),
    ],
    ids=[
        "none",
        "application",
        "dev_eui-lower-case",
        "dev_eui-mixed-case",
        "kind",
        "since-inclusive",
        "until-exclusive",
        "since-and-until",
        "application-kind-since",
        "application-dev_eui-kind",
        "limit",
        "limit-zero",
        "no-match",
    ],
)
def test_query_filters(make_store: MakeStore, query: ReportQuery, numbers: list[int]) -> None:
    """Each filter selects exactly the matching reports, newest first."""

    async def scenario(store: ReportStore) -> None:
        await store.add_many(DATASET)
        assert [r.token for r in await store.query(query)] == [f"token-{n}" for n in numbers]

    run(make_store(), scenario)


def test_before_id_selects_strictly_older(make_store: MakeStore) -> None:
    """``before_id`` excludes the cursor's own row and every newer one."""

    async def scenario(store: ReportStore) -> None:
        outcomes = await store.add_many(DATASET)
        cursor = outcomes[5].id
        found = await store.query(ReportQuery(before_id=cursor, application="dairy"))
        assert [r.token for r in found] == ["token-3", "token-1"]

    run(make_store(), scenario)


def test_cursor_pagination_has_no_gaps_or_repeats(make_store: MakeStore) -> None:
    """Paging 250 reports by 100 with ``before_id`` visits each exactly once, newest first."""
    reports = [new_report(n) for n in range(250)]

    async def scenario(store: ReportStore) -> None:
        stored = [o.id for o in await store.add_many(reports[:120])]
        stored += [o.id for o in await store.add_many(reports[120:])]
        seen: list[int] = []
        sizes: list[int] = []
        cursor: int | None = None
        while page := await store.query(ReportQuery(before_id=cursor, limit=100)):
            sizes.append(len(page))
            seen += [r.id for r in page]
            cursor = page[-1].id
        assert sizes == [100, 100, 50]
        assert seen == sorted(stored, reverse=True)

    run(make_store(), scenario)


def test_ids_grow_with_insertion_order(make_store: MakeStore) -> None:
    """Every new report gets a larger id than all reports stored before it."""

    async def scenario(store: ReportStore) -> None:
        ids: list[int] = []
        for n in range(20):
            ids += [o.id for o in await store.add_many([new_report(2 * n), new_report(2 * n + 1)])]
        assert ids == sorted(set(ids))

    run(make_store(), scenario)


def test_devices_count_and_last_radio(make_store: MakeStore) -> None:
    """Devices list per-kind counts, the latest ``received_at`` and the latest uplink radio."""
    one, two = "70B3D5E75E000001", "70B3D5E75E000002"
    reports = [
        new_report(0, dev_eui=one.lower(), rssi=-90.0, snr=5.0, received_at=T0 + 50),
        new_report(1, dev_eui=one, rssi=-95.5, snr=-2.5, received_at=T0 + 10),
        # Later reports without radio data must not erase the last RSSI/SNR.
        new_report(2, dev_eui=one, kind="notification", rssi=None, snr=None, received_at=T0),
        new_report(3, dev_eui=one, kind="location", rssi=None, snr=None, received_at=T0 + 20),
        new_report(4, dev_eui=two, rssi=-70.0, snr=None, received_at=T0 + 5),
        new_report(5, dev_eui=one, application="dairy", rssi=-60.0, received_at=T0 + 7),
        new_report(6, dev_eui=None, kind="base_station_alarm", rssi=None, snr=None),
    ]

    async def scenario(store: ReportStore) -> None:
        await store.add_many(reports)
        assert await store.devices() == [
            DeviceSummary("dairy", one, T0 + 7, {"uplink": 1}, -60.0, 7.25),
            DeviceSummary(
                "farm", one, T0 + 50, {"uplink": 2, "notification": 1, "location": 1}, -95.5, -2.5
            ),
            DeviceSummary("farm", two, T0 + 5, {"uplink": 1}, -70.0, None),
        ]
        assert await store.devices("dairy") == [
            DeviceSummary("dairy", one, T0 + 7, {"uplink": 1}, -60.0, 7.25)
        ]
        assert await store.devices("nobody") == []

    run(make_store(), scenario)


def test_device_without_radio_data_has_none(make_store: MakeStore) -> None:
    """A device with no report carrying RSSI has no last RSSI or SNR."""

    async def scenario(store: ReportStore) -> None:
        await store.add_many([new_report(1, kind="notification", rssi=None, snr=None)])
        [device] = await store.devices()
        assert (device.last_rssi, device.last_snr) == (None, None)
        assert device.counts == {"notification": 1}

    run(make_store(), scenario)


def test_ping_succeeds_when_open(make_store: MakeStore) -> None:
    """An open store answers ``ping``."""

    async def scenario(store: ReportStore) -> None:
        await store.ping()

    run(make_store(), scenario)


CALLS: list[tuple[str, Callable[[ReportStore], Awaitable[object]]]] = [
    ("add_many", lambda store: store.add_many([new_report(1)])),
    ("get", lambda store: store.get(1)),
    ("get_body", lambda store: store.get_body(1)),
    ("query", lambda store: store.query(ReportQuery())),
    ("devices", lambda store: store.devices()),
    ("ping", lambda store: store.ping()),
]


@pytest.mark.parametrize("call", [c for _, c in CALLS], ids=[name for name, _ in CALLS])
def test_calls_on_a_closed_store_are_refused(
    make_store: MakeStore, call: Callable[[ReportStore], Awaitable[object]]
) -> None:
    """Before ``open`` and after ``close``, every call raises StorageUnavailable."""
    store = make_store()

    async def main() -> None:
        with pytest.raises(StorageUnavailable):
            await call(store)
        await store.open()
        await store.close()
        with pytest.raises(StorageUnavailable):
            await call(store)

    asyncio.run(main())


def test_data_survives_close_and_reopen(make_store: MakeStore) -> None:
    """Reports committed before ``close`` are there after a new store opens the same data."""
    report = new_report(1)
    ids: list[int] = []

    async def write(store: ReportStore) -> None:
        ids.extend(o.id for o in await store.add_many([report]))

    async def read(store: ReportStore) -> None:
        assert await store.get(ids[0]) == expected(report, ids[0])
        assert await store.add_many([report]) == [StoreOutcome(ids[0], duplicate=True)]
        [newer] = await store.add_many([new_report(2)])
        assert newer.id > ids[0]

    run(make_store(), write)
    run(make_store(), read)


def test_concurrent_opens_share_one_schema(make_store: MakeStore) -> None:
    """Several stores opening the same data at once all work (migrations apply once)."""
    stores = [make_store() for _ in range(5)]

    async def main() -> None:
        await asyncio.gather(*(store.open() for store in stores))
        try:
            for n, store in enumerate(stores):
                await store.add_many([new_report(n)])
            assert len(await all_ids(stores[0])) == len(stores)
        finally:
            await asyncio.gather(*(store.close() for store in stores))

    asyncio.run(main())


def test_concurrent_batches_all_commit(make_store: MakeStore) -> None:
    """200 tasks adding at once each get their own committed ids."""

    async def scenario(store: ReportStore) -> None:
        batches = [[new_report(2 * n), new_report(2 * n + 1)] for n in range(200)]
        results = await asyncio.gather(*(store.add_many(batch) for batch in batches))
        ids = [o.id for outcomes in results for o in outcomes]
        assert not any(o.duplicate for outcomes in results for o in outcomes)
        assert len(set(ids)) == 400
        for outcomes in results:  # a batch's ids follow its order
            assert outcomes[0].id < outcomes[1].id
        assert sorted(await all_ids(store)) == sorted(ids)

    run(make_store(), scenario)


def test_concurrent_deliveries_of_one_report_store_it_once(make_store: MakeStore) -> None:
    """The same report added by 50 tasks at once is stored once; all name the same id."""
    report = new_report(1)

    async def scenario(store: ReportStore) -> None:
        results = await asyncio.gather(*(store.add_many([report]) for _ in range(50)))
        outcomes = [outcome for [outcome] in results]
        assert sum(not o.duplicate for o in outcomes) == 1
        assert {o.id for o in outcomes} == set(await all_ids(store))

    run(make_store(), scenario)
