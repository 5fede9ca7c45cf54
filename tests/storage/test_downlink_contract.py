"""The DownlinkStore contract: every backend (memory, SQLite, PostgreSQL) keeps the outbox
the same way: idempotent creates, per-device order, leases, retries, cancels, delivery."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tpas.errors import DownlinkParameterError, StorageUnavailable
from tpas.storage import SqliteStore, migrations
from tpas.storage.ports import (
    Attempt,
    Downlink,
    DownlinkQuery,
    DownlinkStatus,
    NewDownlink,
    ReportQuery,
    Store,
)
from tpas.storage.postgres import PostgresStore

MakeStore = Callable[[], Store]

T0 = 1_700_000_000.0
NOW = T0 + 100.0
LEASE = 30.0
DEV1 = "70B3D5E75E000001"
DEV2 = "70B3D5E75E000002"

QUEUED = DownlinkStatus.QUEUED
SUBMITTED = DownlinkStatus.SUBMITTED
SENT = DownlinkStatus.SENT
FAILED = DownlinkStatus.FAILED


def new_downlink(n: int, **changes: Any) -> NewDownlink:
    """Downlink request number ``n`` (its own CorrelationID), for DEV1 on port 2."""
    new = NewDownlink(
        application="farm",
        dev_eui=DEV1,
        correlation_id=f"{n:016X}",
        created_at=T0 + n,
        fport=2,
        payload_hex=f"{n % 256:02X}FF",
    )
    return replace(new, **changes)


def accepted(number: int = 1, at: float = NOW) -> Attempt:
    """An attempt the network server accepted."""
    return Attempt(number, at, "accepted", 202, "")


def transient(number: int = 1, at: float = NOW) -> Attempt:
    """An attempt that failed in a way worth retrying."""
    return Attempt(number, at, "transient", 503, "Service Unavailable")


def run(store: Store, scenario: Callable[[Store], Awaitable[None]]) -> None:
    """Open ``store``, play ``scenario`` on it, close it (also on failure)."""

    async def main() -> None:
        await store.open()
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


async def create(store: Store, new: NewDownlink) -> Downlink:
    """Create ``new`` and insist that it is new."""
    downlink, created = await store.create_downlink(new)
    assert created is True
    return downlink


async def submit(store: Store, downlink: Downlink, now: float = NOW) -> Downlink:
    """Claim ``downlink`` (it must be due) and record the network server's acceptance."""
    claimed = await store.claim_due(now, 100, LEASE, "w")
    assert downlink.id in [d.id for d in claimed]
    return await store.record_attempt(downlink.id, accepted(at=now), status=SUBMITTED, now=now)


async def ids(store: Store, query: DownlinkQuery) -> list[int]:
    """The ids that ``query`` lists, in order."""
    return [d.id for d in await store.list_downlinks(query)]


# Creating and reading


def test_create_stores_every_field_as_queued(make_store: MakeStore) -> None:
    """A new downlink reads back queued, due at its creation, every field kept, DevEUI and
    CorrelationID upper case."""
    new = NewDownlink(
        application="farm",
        dev_eui="70b3d5e75e00abcd",
        correlation_id="00000000deadbeef",
        created_at=T0 + 0.125,
        fport=223,
        payload_hex="0A0B",
        confirmed=True,
        flush_queue=True,
        validity_time="2023-11-14T23:13:20Z",
        expires_at=T0 + 3600.5,
        fcnt_dn=4_294_967_295,
        idempotency_key="key-1",
    )

    async def scenario(store: Store) -> None:
        downlink, created = await store.create_downlink(new)
        assert created is True
        assert downlink == Downlink(
            id=downlink.id,
            application="farm",
            dev_eui="70B3D5E75E00ABCD",
            correlation_id="00000000DEADBEEF",
            created_at=T0 + 0.125,
            status="queued",
            fport=223,
            payload_hex="0A0B",
            confirmed=True,
            flush_queue=True,
            validity_time="2023-11-14T23:13:20Z",
            expires_at=T0 + 3600.5,
            fcnt_dn=4_294_967_295,
            idempotency_key="key-1",
            next_attempt_at=T0 + 0.125,
        )
        assert await store.get_downlink(downlink.id) == downlink

    run(make_store(), scenario)


def test_optional_fields_read_back_as_none(make_store: MakeStore) -> None:
    """A flush-only downlink without port, payload or validity reads back with those None."""
    new = NewDownlink("farm", DEV1, "0000000000000001", T0, flush_queue=True)

    async def scenario(store: Store) -> None:
        downlink = await create(store, new)
        read = await store.get_downlink(downlink.id)
        assert read == downlink
        assert read is not None
        assert (read.fport, read.payload_hex, read.expires_at, read.fcnt_dn) == (None,) * 4
        assert (read.confirmed, read.flush_queue) == (False, True)

    run(make_store(), scenario)


def test_unknown_id_reads_as_none(make_store: MakeStore) -> None:
    """Reading or cancelling an id never created gives None."""

    async def scenario(store: Store) -> None:
        await create(store, new_downlink(1))
        assert await store.get_downlink(987_654) is None
        assert await store.cancel_downlink(987_654, NOW) is None

    run(make_store(), scenario)


@pytest.mark.parametrize(
    "change",
    [
        lambda store, n: store.record_attempt(n, accepted(), status=SUBMITTED, now=NOW),
        lambda store, n: store.finish_downlink(n, DownlinkStatus.EXPIRED, NOW),
    ],
    ids=["record_attempt", "finish_downlink"],
)
def test_changing_an_unknown_id_is_a_lookup_error(
    make_store: MakeStore, change: Callable[[Store, int], Awaitable[Downlink]]
) -> None:
    """Recording an attempt on, or finishing, an id never created raises LookupError."""

    async def scenario(store: Store) -> None:
        with pytest.raises(LookupError, match="987654"):
            await change(store, 987_654)

    run(make_store(), scenario)


def test_ids_grow_with_creation_order(make_store: MakeStore) -> None:
    """Each new downlink gets a larger id than the one before."""

    async def scenario(store: Store) -> None:
        created = [(await create(store, new_downlink(n))).id for n in range(5)]
        assert created == sorted(created)
        assert len(set(created)) == 5

    run(make_store(), scenario)


# Idempotency


def test_idempotency_key_returns_the_existing_downlink(make_store: MakeStore) -> None:
    """A second create with a key already used in the application returns the first
    downlink and False, and stores nothing."""

    async def scenario(store: Store) -> None:
        first = await create(store, new_downlink(1, idempotency_key="k"))
        again, created = await store.create_downlink(
            new_downlink(2, idempotency_key="k", payload_hex="00")
        )
        assert (again, created) == (first, False)
        assert await ids(store, DownlinkQuery()) == [first.id]

    run(make_store(), scenario)


def test_idempotency_key_is_per_application(make_store: MakeStore) -> None:
    """The same key in another application, or no key at all, makes a new downlink."""

    async def scenario(store: Store) -> None:
        first = await create(store, new_downlink(1, idempotency_key="k"))
        other = await create(store, new_downlink(2, idempotency_key="k", application="zoo"))
        plain = [await create(store, new_downlink(n)) for n in (3, 4)]
        assert len({first.id, other.id, *(d.id for d in plain)}) == 4

    run(make_store(), scenario)


def test_concurrent_creates_with_one_key_store_one_downlink(make_store: MakeStore) -> None:
    """20 creates with the same key at once store one downlink; all return it, one says
    it was created."""

    async def scenario(store: Store) -> None:
        results = await asyncio.gather(
            *(store.create_downlink(new_downlink(n, idempotency_key="k")) for n in range(20))
        )
        assert sum(created for _, created in results) == 1
        assert len({downlink.id for downlink, _ in results}) == 1
        assert len(await ids(store, DownlinkQuery())) == 1

    run(make_store(), scenario)


def test_taken_correlation_id_is_refused(make_store: MakeStore) -> None:
    """A CorrelationID already used (in any case, any application) is an input error, and
    nothing is stored."""

    async def scenario(store: Store) -> None:
        first = await create(store, new_downlink(1, correlation_id="00000000DEADBEEF"))
        with pytest.raises(DownlinkParameterError) as caught:
            await store.create_downlink(
                new_downlink(2, correlation_id="00000000deadbeef", application="zoo")
            )
        assert caught.value.field == "CorrelationID"
        assert await ids(store, DownlinkQuery()) == [first.id]

    run(make_store(), scenario)


# Claims: due time, per-device order, leases


def test_claim_keeps_order_per_device(make_store: MakeStore) -> None:
    """With three downlinks for one device and one for another, a claim gets the first of
    each; the second of the first device comes once the first is submitted."""

    async def scenario(store: Store) -> None:
        a1, a2, a3 = [await create(store, new_downlink(n)) for n in (1, 2, 3)]
        b1 = await create(store, new_downlink(4, dev_eui=DEV2))
        assert [d.id for d in await store.claim_due(NOW, 10, LEASE, "w")] == [a1.id, b1.id]
        assert await store.claim_due(NOW, 10, LEASE, "w") == []
        await store.record_attempt(a1.id, accepted(), status=SUBMITTED, now=NOW)
        assert [d.id for d in await store.claim_due(NOW, 10, LEASE, "w")] == [a2.id]
        await store.record_attempt(a2.id, transient(), status=FAILED, now=NOW, detail="gone")
        assert [d.id for d in await store.claim_due(NOW, 10, LEASE, "w")] == [a3.id]

    run(make_store(), scenario)


def test_claim_waits_for_an_older_downlink_that_is_not_due(make_store: MakeStore) -> None:
    """A later downlink of a device waits while an earlier one is queued for a retry,
    even though the later one is due itself."""

    async def scenario(store: Store) -> None:
        first = await create(store, new_downlink(1))
        second = await create(store, new_downlink(2))
        await store.claim_due(NOW, 10, LEASE, "w")
        await store.record_attempt(
            first.id, transient(), status=QUEUED, now=NOW, next_attempt_at=NOW + 60
        )
        assert await store.claim_due(NOW + 10, 10, LEASE, "w") == []
        assert [d.id for d in await store.claim_due(NOW + 60, 10, LEASE, "w")] == [first.id]
        await store.record_attempt(first.id, accepted(2), status=SUBMITTED, now=NOW + 60)
        assert [d.id for d in await store.claim_due(NOW + 60, 10, LEASE, "w")] == [second.id]

    run(make_store(), scenario)


def test_order_is_per_application_and_device(make_store: MakeStore) -> None:
    """The same DevEUI in another application is another device: it does not wait."""

    async def scenario(store: Store) -> None:
        farm = await create(store, new_downlink(1))
        zoo = await create(store, new_downlink(2, application="zoo"))
        claimed = await store.claim_due(NOW, 10, LEASE, "w")
        assert [d.id for d in claimed] == [farm.id, zoo.id]

    run(make_store(), scenario)


def test_claim_takes_the_earliest_due_first_up_to_the_limit(make_store: MakeStore) -> None:
    """A claim returns at most ``limit`` downlinks, by due time then id, and leaves the rest."""

    async def scenario(store: Store) -> None:
        made = [
            await create(store, new_downlink(n, dev_eui=f"70B3D5E75E0000{n:02X}", created_at=at))
            for n, at in enumerate([T0 + 5, T0 + 1, T0 + 5, T0 + 3])
        ]
        first = await store.claim_due(NOW, 3, LEASE, "w")
        assert [d.id for d in first] == [made[1].id, made[3].id, made[0].id]
        assert [d.id for d in await store.claim_due(NOW, 3, LEASE, "w")] == [made[2].id]
        assert await store.claim_due(NOW, 0, LEASE, "w") == []

    run(make_store(), scenario)


def test_a_downlink_is_not_due_before_its_creation_time(make_store: MakeStore) -> None:
    """A claim at a time before ``created_at`` leaves the downlink alone; at that time it
    takes it (``next_attempt_at <= now``)."""

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        assert await store.claim_due(T0, 10, LEASE, "w") == []
        assert [d.id for d in await store.claim_due(T0 + 1, 10, LEASE, "w")] == [downlink.id]

    run(make_store(), scenario)


def test_lease_keeps_a_claim_until_it_expires(make_store: MakeStore) -> None:
    """A claimed downlink is not claimed again while its lease lasts; once it has expired
    (its dispatcher crashed) another worker gets it: at least once."""

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        [claimed] = await store.claim_due(NOW, 10, LEASE, "first")
        assert claimed == downlink
        assert await store.claim_due(NOW + LEASE - 1, 10, LEASE, "second") == []
        assert await store.claim_due(NOW + LEASE, 10, LEASE, "second") == []
        [again] = await store.claim_due(NOW + LEASE + 1, 10, LEASE, "second")
        assert again.id == downlink.id
        assert await store.claim_due(NOW + LEASE + 2, 10, LEASE, "third") == []

    run(make_store(), scenario)


# Attempts


def test_transient_attempt_schedules_a_retry(make_store: MakeStore) -> None:
    """An attempt recorded as queued releases the lease and makes the downlink due again
    only at ``next_attempt_at``."""

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        await store.claim_due(NOW, 10, 600.0, "w")
        retry = await store.record_attempt(
            downlink.id, transient(), status=QUEUED, now=NOW, next_attempt_at=NOW + 60
        )
        assert (retry.status, retry.next_attempt_at, retry.attempts) == (
            QUEUED,
            NOW + 60,
            (transient(),),
        )
        assert await store.claim_due(NOW + 59.9, 10, 600.0, "w") == []
        [claimed] = await store.claim_due(NOW + 60, 10, 600.0, "w")
        assert claimed == retry
        assert await store.get_downlink(downlink.id) == retry

    run(make_store(), scenario)


def test_accepted_attempt_submits(make_store: MakeStore) -> None:
    """An attempt recorded as submitted sets ``submitted_at`` and clears the due time."""

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        submitted = await submit(store, downlink)
        assert submitted == replace(
            downlink,
            status=SUBMITTED,
            submitted_at=NOW,
            next_attempt_at=None,
            attempts=(accepted(),),
        )
        assert await store.get_downlink(downlink.id) == submitted
        assert await store.claim_due(NOW + 1000, 10, LEASE, "w") == []

    run(make_store(), scenario)


def test_final_attempt_finishes_with_detail(make_store: MakeStore) -> None:
    """An attempt recorded with a terminal status sets ``finished_at`` and ``detail``."""
    refused = Attempt(3, NOW, "permanent", 400, "Invalid FPort")

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        await store.claim_due(NOW, 10, LEASE, "w")
        failed = await store.record_attempt(
            downlink.id, refused, status=FAILED, now=NOW + 1, detail="Invalid FPort"
        )
        assert failed == replace(
            downlink,
            status=FAILED,
            finished_at=NOW + 1,
            next_attempt_at=None,
            detail="Invalid FPort",
            attempts=(refused,),
        )
        assert await store.get_downlink(downlink.id) == failed

    run(make_store(), scenario)


def test_attempts_and_delivery_round_trip(make_store: MakeStore) -> None:
    """Attempts and a delivery report read back exactly: numbers, None, text with quotes,
    backslashes and non-ASCII, nested values."""
    attempts = [
        Attempt(1, NOW + 0.125, "transient", None, 'timeout after 10 s: "read" \\ é ✓'),
        Attempt(2, NOW + 60.5, "transient", 350, "No Base Station Available"),
        Attempt(3, NOW + 180.25, "accepted", 200, ""),
    ]
    delivery = {
        "delivery_status": 1,
        "causes": ["A3: no answer", "D0 \u00e9"],
        "slot": {"transmission": 2, "frequency": 869.525},
        "lrr": None,
        "ok": True,
        "report_id": 12,
    }

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        for attempt in attempts[:2]:
            await store.claim_due(attempt.at, 10, LEASE, "w")
            await store.record_attempt(
                downlink.id, attempt, status=QUEUED, now=attempt.at, next_attempt_at=attempt.at
            )
        await store.claim_due(attempts[2].at, 10, LEASE, "w")
        await store.record_attempt(downlink.id, attempts[2], status=SUBMITTED, now=NOW + 181)
        matched = await store.match_delivery(
            "farm",
            correlation_id=downlink.correlation_id,
            dev_eui=DEV1,
            fport=2,
            fcnt_dn=7,
            status=SENT,
            delivery=delivery,
            now=NOW + 200,
        )
        assert matched is not None
        assert matched.attempts == tuple(attempts)
        assert matched.delivery == delivery
        assert await store.get_downlink(downlink.id) == matched
        assert await store.list_downlinks(DownlinkQuery()) == [matched]

    run(make_store(), scenario)


def test_status_never_moves_back(make_store: MakeStore) -> None:
    """A late record (a delivery report came first, or another worker already submitted)
    appends its attempt but leaves the status where it is."""

    async def scenario(store: Store) -> None:
        early = await create(store, new_downlink(1))
        [claimed] = await store.claim_due(NOW, 10, LEASE, "w")
        sent = await store.match_delivery(
            "farm",
            correlation_id=early.correlation_id,
            dev_eui=DEV1,
            fport=2,
            fcnt_dn=None,
            status=SENT,
            delivery={"delivery_status": 1},
            now=NOW + 1,
        )
        assert sent is not None
        late = await store.record_attempt(claimed.id, accepted(), status=SUBMITTED, now=NOW + 2)
        assert late == replace(sent, attempts=(accepted(),))

        other = await create(store, new_downlink(2, dev_eui=DEV2))
        submitted = await submit(store, other)
        stale = await store.record_attempt(
            other.id, transient(2), status=QUEUED, now=NOW + 3, next_attempt_at=NOW + 4
        )
        assert stale == replace(submitted, attempts=(accepted(), transient(2)))

    run(make_store(), scenario)


@pytest.mark.parametrize(
    "call",
    [
        lambda store, n: store.record_attempt(n, accepted(), status="bogus", now=NOW),
        lambda store, n: store.finish_downlink(n, QUEUED, NOW),
        lambda store, n: store.finish_downlink(n, "bogus", NOW),
        lambda store, n: store.match_delivery(
            "farm",
            correlation_id=None,
            dev_eui=DEV1,
            fport=2,
            fcnt_dn=None,
            status=SUBMITTED,
            delivery={},
            now=NOW,
        ),
    ],
    ids=["attempt-unknown-status", "finish-to-queued", "finish-unknown", "deliver-to-submitted"],
)
def test_impossible_status_is_a_value_error(
    make_store: MakeStore, call: Callable[[Store, int], Awaitable[object]]
) -> None:
    """An unknown status, or a non-terminal one where only a terminal one makes sense,
    raises ValueError and changes nothing."""

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        with pytest.raises(ValueError, match="status"):
            await call(store, downlink.id)
        assert await store.get_downlink(downlink.id) == downlink

    run(make_store(), scenario)


# Finishing and cancelling


def test_finish_ends_a_downlink_and_its_lease(make_store: MakeStore) -> None:
    """Finishing a claimed downlink makes it terminal with ``finished_at`` and ``detail``;
    finishing it again changes nothing."""

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        second = await create(store, new_downlink(2))
        await store.claim_due(NOW, 10, LEASE, "w")
        expired = await store.finish_downlink(
            downlink.id, DownlinkStatus.EXPIRED, NOW, "validity ended"
        )
        assert expired == replace(
            downlink,
            status="expired",
            finished_at=NOW,
            next_attempt_at=None,
            detail="validity ended",
        )
        again = await store.finish_downlink(downlink.id, FAILED, NOW + 5, "other")
        assert again == expired
        assert await store.get_downlink(downlink.id) == expired
        # Terminal: the next downlink of the device may go.
        assert [d.id for d in await store.claim_due(NOW, 10, LEASE, "w")] == [second.id]

    run(make_store(), scenario)


def test_cancel_a_queued_downlink(make_store: MakeStore) -> None:
    """A queued, unleased downlink is cancelled (True); cancelling it again says False and
    changes nothing."""

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        result = await store.cancel_downlink(downlink.id, NOW)
        cancelled = replace(
            downlink,
            status="cancelled",
            finished_at=NOW,
            next_attempt_at=None,
            detail="cancelled",
        )
        assert result == (cancelled, True)
        assert await store.cancel_downlink(downlink.id, NOW + 1) == (cancelled, False)
        assert await store.get_downlink(downlink.id) == cancelled
        assert await store.claim_due(NOW + 1, 10, LEASE, "w") == []

    run(make_store(), scenario)


def test_cancel_waits_for_the_lease(make_store: MakeStore) -> None:
    """A downlink a dispatcher holds cannot be cancelled; once the lease expired it can."""

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        await store.claim_due(NOW, 10, LEASE, "w")
        assert await store.cancel_downlink(downlink.id, NOW + LEASE) == (downlink, False)
        result = await store.cancel_downlink(downlink.id, NOW + LEASE + 1)
        assert result is not None
        assert result[1] is True
        assert result[0].status == "cancelled"

    run(make_store(), scenario)


def test_cancel_refuses_a_submitted_downlink(make_store: MakeStore) -> None:
    """A downlink the network server accepted cannot be cancelled any more."""

    async def scenario(store: Store) -> None:
        submitted = await submit(store, await create(store, new_downlink(1)))
        assert await store.cancel_downlink(submitted.id, NOW + 1000) == (submitted, False)

    run(make_store(), scenario)


def test_cancelling_the_first_unblocks_the_next(make_store: MakeStore) -> None:
    """Once a device's first downlink is cancelled, its second one is due."""

    async def scenario(store: Store) -> None:
        first = await create(store, new_downlink(1))
        second = await create(store, new_downlink(2))
        await store.cancel_downlink(first.id, NOW)
        assert [d.id for d in await store.claim_due(NOW, 10, LEASE, "w")] == [second.id]

    run(make_store(), scenario)


# Delivery reports


async def deliver(
    store: Store,
    *,
    correlation_id: str | None = None,
    dev_eui: str = DEV1,
    fport: int | None = 2,
    fcnt_dn: int | None = 7,
    status: str = SENT,
    application: str = "farm",
    now: float = NOW + 10,
) -> Downlink | None:
    """Apply a delivery report with these fields."""
    return await store.match_delivery(
        application,
        correlation_id=correlation_id,
        dev_eui=dev_eui,
        fport=fport,
        fcnt_dn=fcnt_dn,
        status=status,
        delivery={"fcnt_dn": fcnt_dn, "status": status},
        now=now,
    )


def test_delivery_matches_by_correlation_id(make_store: MakeStore) -> None:
    """A report with the CorrelationID (any case) finishes that downlink, even when DevEUI,
    port and counter say otherwise, and stores what it said."""

    async def scenario(store: Store) -> None:
        older = await submit(store, await create(store, new_downlink(1, dev_eui=DEV2)))
        downlink = await submit(store, await create(store, new_downlink(2)))
        matched = await deliver(
            store,
            correlation_id=downlink.correlation_id.lower(),
            dev_eui=DEV2,
            fport=99,
            status=FAILED,
        )
        assert matched == replace(
            downlink,
            status=FAILED,
            finished_at=NOW + 10,
            delivery={"fcnt_dn": 7, "status": "failed"},
        )
        assert await store.get_downlink(downlink.id) == matched
        assert await store.get_downlink(older.id) == older

    run(make_store(), scenario)


def test_delivery_can_overtake_the_submission(make_store: MakeStore) -> None:
    """A report for a downlink still recorded as queued (the network answered before tpas
    committed the submission) finishes it."""

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        matched = await deliver(store, correlation_id=downlink.correlation_id)
        assert matched is not None
        assert (matched.status, matched.finished_at, matched.next_attempt_at) == (
            SENT,
            NOW + 10,
            None,
        )

    run(make_store(), scenario)


def test_repeated_delivery_report_changes_nothing(make_store: MakeStore) -> None:
    """A second report for a finished downlink returns it unchanged."""

    async def scenario(store: Store) -> None:
        downlink = await submit(store, await create(store, new_downlink(1)))
        first = await deliver(store, correlation_id=downlink.correlation_id)
        again = await deliver(
            store, correlation_id=downlink.correlation_id, status=FAILED, fcnt_dn=8, now=NOW + 99
        )
        assert first is not None
        assert again == first
        assert await store.get_downlink(downlink.id) == first

    run(make_store(), scenario)


def test_cancelled_downlink_ignores_a_delivery_report(make_store: MakeStore) -> None:
    """A report matching a cancelled downlink by CorrelationID leaves it cancelled."""

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        result = await store.cancel_downlink(downlink.id, NOW)
        assert result is not None
        assert await deliver(store, correlation_id=downlink.correlation_id) == result[0]

    run(make_store(), scenario)


def test_fallback_takes_the_oldest_submitted_downlink(make_store: MakeStore) -> None:
    """Without a known CorrelationID, reports finish the device's submitted downlinks on
    that port oldest first; DevEUI is compared without case."""

    async def scenario(store: Store) -> None:
        first = await submit(store, await create(store, new_downlink(1)))
        other_port = await create(store, new_downlink(2, fport=3))
        await store.record_attempt(other_port.id, accepted(), status=SUBMITTED, now=NOW)
        second = await create(store, new_downlink(3))
        await store.record_attempt(second.id, accepted(), status=SUBMITTED, now=NOW)
        matches = [
            await deliver(store, correlation_id="FFFFFFFFFFFFFFFF", dev_eui=DEV1.lower()),
            await deliver(store, correlation_id=None),
            await deliver(store, correlation_id=None),
        ]
        assert [m.id if m else None for m in matches] == [first.id, second.id, None]
        still = await store.get_downlink(other_port.id)
        assert still is not None
        assert still.status == SUBMITTED

    run(make_store(), scenario)


@pytest.mark.parametrize(
    ("stored", "reported", "matches"),
    [
        ({"fcnt_dn": None}, {"fcnt_dn": 7}, True),
        ({"fcnt_dn": 7}, {"fcnt_dn": 7}, True),
        ({"fcnt_dn": 7}, {"fcnt_dn": 8}, False),
        ({"fcnt_dn": 7}, {"fcnt_dn": None}, False),
        ({}, {"fport": 3}, False),
        ({"fport": None}, {"fport": None}, True),
        ({}, {"dev_eui": DEV2}, False),
        ({}, {"application": "zoo"}, False),
    ],
    ids=[
        "any-fcnt-when-unset",
        "same-fcnt",
        "other-fcnt",
        "report-without-fcnt",
        "other-port",
        "both-without-port",
        "other-device",
        "other-application",
    ],
)
def test_fallback_match_rules(
    make_store: MakeStore, stored: dict[str, Any], reported: dict[str, Any], matches: bool
) -> None:
    """Without CorrelationID, a submitted downlink matches a report of its application and
    DevEUI with the same port, and the same FCntDn when the downlink set one."""

    async def scenario(store: Store) -> None:
        downlink = await submit(store, await create(store, new_downlink(1, **stored)))
        matched = await deliver(store, **reported)
        assert (matched is not None) == matches
        if matches:
            assert matched is not None
            assert (matched.id, matched.status) == (downlink.id, SENT)

    run(make_store(), scenario)


def test_fallback_leaves_queued_downlinks_alone(make_store: MakeStore) -> None:
    """Without CorrelationID, a report never matches a downlink not yet submitted."""

    async def scenario(store: Store) -> None:
        downlink = await create(store, new_downlink(1))
        assert await deliver(store) is None
        assert await store.get_downlink(downlink.id) == downlink

    run(make_store(), scenario)


def test_correlation_id_of_another_application_does_not_match(make_store: MakeStore) -> None:
    """A CorrelationID is looked up only within the report's application."""

    async def scenario(store: Store) -> None:
        downlink = await submit(store, await create(store, new_downlink(1)))
        assert (
            await deliver(store, correlation_id=downlink.correlation_id, application="zoo") is None
        )
        assert await store.get_downlink(downlink.id) == downlink

    run(make_store(), scenario)


# Listing and counting


LISTED = [
    ("farm", DEV1, QUEUED),
    ("farm", DEV1, SUBMITTED),
    ("farm", DEV2, QUEUED),
    ("zoo", DEV1, QUEUED),
    ("zoo", DEV2, SUBMITTED),
]


@pytest.mark.parametrize(
    ("query", "numbers"),
    [
        (DownlinkQuery(), [4, 3, 2, 1, 0]),
        (DownlinkQuery(application="farm"), [2, 1, 0]),
        (DownlinkQuery(dev_eui=DEV1.lower()), [3, 1, 0]),
        (DownlinkQuery(status="submitted"), [4, 1]),
        (DownlinkQuery(application="farm", dev_eui=DEV1, status="queued"), [0]),
        (DownlinkQuery(limit=2), [4, 3]),
        (DownlinkQuery(limit=0), []),
        (DownlinkQuery(application="nobody"), []),
    ],
    ids=[
        "all",
        "application",
        "dev_eui-any-case",
        "status",
        "all-filters",
        "limit",
        "limit-0",
        "none",
    ],
)
def test_list_filters(make_store: MakeStore, query: DownlinkQuery, numbers: list[int]) -> None:
    """Listing filters by application, DevEUI (any case) and status, newest first."""

    async def scenario(store: Store) -> None:
        made: list[Downlink] = []
        for n, (application, dev_eui, status) in enumerate(LISTED):
            downlink = await create(
                store, new_downlink(n, application=application, dev_eui=dev_eui)
            )
            if status == SUBMITTED:
                await store.record_attempt(downlink.id, accepted(), status=SUBMITTED, now=NOW)
            made.append(downlink)
        assert await ids(store, query) == [made[n].id for n in numbers]

    run(make_store(), scenario)


def test_list_pages_with_before_id(make_store: MakeStore) -> None:
    """Pages cursored by ``before_id`` cover every downlink once, newest first."""

    async def scenario(store: Store) -> None:
        made = [(await create(store, new_downlink(n))).id for n in range(7)]
        seen: list[int] = []
        cursor: int | None = None
        while page := await ids(store, DownlinkQuery(before_id=cursor, limit=3)):
            seen.extend(page)
            cursor = page[-1]
        assert seen == made[::-1]

    run(make_store(), scenario)


def test_count_by_status(make_store: MakeStore) -> None:
    """Counting gives the number of downlinks in each status that has any."""

    async def scenario(store: Store) -> None:
        assert not any((await store.count_downlinks()).values())
        made = [
            await create(store, new_downlink(n, dev_eui=f"70B3D5E75E0000{n:02X}")) for n in range(5)
        ]
        await store.cancel_downlink(made[1].id, NOW)
        await store.finish_downlink(made[2].id, FAILED, NOW)
        await submit(store, made[0])
        counts = await store.count_downlinks()
        assert {k: v for k, v in counts.items() if v} == {
            "submitted": 1,
            "cancelled": 1,
            "failed": 1,
            "queued": 2,
        }

    run(make_store(), scenario)


# Lifecycle


CALLS: list[tuple[str, Callable[[Store], Awaitable[object]]]] = [
    ("create_downlink", lambda store: store.create_downlink(new_downlink(1))),
    ("get_downlink", lambda store: store.get_downlink(1)),
    ("list_downlinks", lambda store: store.list_downlinks(DownlinkQuery())),
    ("cancel_downlink", lambda store: store.cancel_downlink(1, NOW)),
    ("claim_due", lambda store: store.claim_due(NOW, 10, LEASE, "w")),
    ("claim_due-0", lambda store: store.claim_due(NOW, 0, LEASE, "w")),
    ("record_attempt", lambda store: store.record_attempt(1, accepted(), status=SENT, now=NOW)),
    ("finish_downlink", lambda store: store.finish_downlink(1, FAILED, NOW)),
    ("match_delivery", lambda store: deliver(store)),
    ("count_downlinks", lambda store: store.count_downlinks()),
]


@pytest.mark.parametrize("call", [c for _, c in CALLS], ids=[name for name, _ in CALLS])
def test_calls_on_a_closed_store_are_refused(
    make_store: MakeStore, call: Callable[[Store], Awaitable[object]]
) -> None:
    """Before ``open`` and after ``close``, every outbox call raises StorageUnavailable."""
    store = make_store()

    async def main() -> None:
        with pytest.raises(StorageUnavailable):
            await call(store)
        await store.open()
        await store.close()
        with pytest.raises(StorageUnavailable):
            await call(store)

    asyncio.run(main())


def test_outbox_survives_close_and_reopen(make_store: MakeStore) -> None:
    """Downlinks, their attempts and their leases are there after a new store opens the
    same data: a lease taken before a crash still holds until it expires."""
    state: dict[str, Downlink] = {}

    async def write(store: Store) -> None:
        first = await create(store, new_downlink(1, idempotency_key="k"))
        await store.claim_due(NOW, 10, LEASE, "w")
        state["first"] = await store.record_attempt(
            first.id, transient(), status=QUEUED, now=NOW, next_attempt_at=NOW + 5
        )
        state["leased"] = await create(store, new_downlink(2, dev_eui=DEV2))
        await store.claim_due(NOW, 10, LEASE, "w")

    async def read(store: Store) -> None:
        first, leased = state["first"], state["leased"]
        assert await store.get_downlink(first.id) == first
        assert await store.create_downlink(new_downlink(3, idempotency_key="k")) == (first, False)
        assert [d.id for d in await store.claim_due(NOW + 6, 10, LEASE, "w")] == [first.id]
        assert [d.id for d in await store.claim_due(NOW + LEASE + 1, 10, LEASE, "w")] == [leased.id]

    run(make_store(), write)
    run(make_store(), read)


_V1_INSERT = (
    "INSERT INTO reports (application, kind, dev_eui, time, time_ts, received_at, token, "
    "frame_key, report_json, body, content_type) VALUES ({}) RETURNING id"
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def test_migration_from_reports_only_keeps_the_reports(
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """A database made by a tpas without the outbox (schema version 1, which also kept the
    model as JSON beside the body) gains the outbox and the leaner report table on open,
    and keeps its reports, bodies included."""
    make_store: MakeStore
    body = b'{"DevEUI_uplink": {"DevEUI": "%s"}}' % DEV1.encode()
    row = ("farm", "uplink", DEV1, None, T0, T0, "t", "f", b"{}", body, "application/json")
    if backend == "sqlite":
        path = tmp_path / "tpas.db"
        make_store = lambda: SqliteStore(path)  # noqa: E731

        def insert_v1() -> int:
            with contextlib.closing(sqlite3.connect(path)) as conn, conn:
                (row_id,) = conn.execute(
                    _V1_INSERT.format(", ".join("?" * len(row))), row
                ).fetchone()
                return int(row_id)
    else:
        dsn: str = request.getfixturevalue("pg_schema")
        make_store = lambda: PostgresStore(dsn)  # noqa: E731

        def insert_v1() -> int:
            with psycopg.connect(dsn) as conn:
                found = conn.execute(
                    _V1_INSERT.format(", ".join(["%s"] * len(row))), row
                ).fetchone()
                assert found is not None
                return int(found[0])

    async def nothing(store: Store) -> None:
        pass

    with monkeypatch.context() as old:
        old.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
        old.setattr(migrations, "LATEST_VERSION", 1)
        run(make_store(), nothing)
    stored = insert_v1()

    async def latest(store: Store) -> None:
        [report] = await store.query(ReportQuery())
        assert (report.id, report.dev_eui, report.body) == (stored, DEV1, body)
        assert await store.get_body(stored) == (body, "application/json")
        downlink = await create(store, new_downlink(1))
        assert await store.get_downlink(downlink.id) == downlink

    run(make_store(), latest)


def test_two_stores_claim_every_downlink_exactly_once(make_store: MakeStore) -> None:
    """Two stores on the same data (two processes) claiming 1,000 due downlinks at once,
    in rounds until none is left, between them claim each exactly once."""
    total = 1_000

    async def main() -> None:
        first, second = make_store(), make_store()
        await first.open()
        await second.open()
        try:
            for start in range(0, total, 100):
                await asyncio.gather(
                    *(
                        first.create_downlink(new_downlink(n, dev_eui=f"{n:016X}"))
                        for n in range(start, start + 100)
                    )
                )

            async def worker(store: Store, name: str) -> list[int]:
                claimed: list[int] = []
                while batch := await store.claim_due(T0 + total, 25, 600.0, name):
                    claimed.extend(d.id for d in batch)
                    await asyncio.sleep(0)  # let the other worker in
                return claimed

            one, two = await asyncio.gather(worker(first, "one"), worker(second, "two"))
            everything = one + two
            assert len(everything) == total
            assert set(everything) == set(await ids(first, DownlinkQuery(limit=total)))
        finally:
            await first.close()
            await second.close()

    asyncio.run(main())


def test_two_stores_keep_order_per_device(make_store: MakeStore) -> None:
    """Two stores dispatching 100 devices' downlinks at once never hold two downlinks of
    one device together, and submit each device's downlinks in creation order."""
    devices = [f"70B3D5E75E{n:06X}" for n in range(100)]

    async def main() -> None:
        first, second = make_store(), make_store()
        await first.open()
        await second.open()
        in_flight: set[str] = set()
        order: dict[str, list[int]] = {device: [] for device in devices}
        try:
            for round_ in range(3):
                await asyncio.gather(
                    *(
                        first.create_downlink(new_downlink(round_ * 100 + n, dev_eui=device))
                        for n, device in enumerate(devices)
                    )
                )

            async def worker(store: Store, name: str) -> None:
                while batch := await store.claim_due(T0 + 1_000, 10, 600.0, name):
                    for downlink in batch:
                        assert downlink.dev_eui not in in_flight
                        in_flight.add(downlink.dev_eui)
                        order[downlink.dev_eui].append(downlink.id)
                    for downlink in batch:
                        # Before the commit that lets the device's next downlink go.
                        in_flight.discard(downlink.dev_eui)
                        await store.record_attempt(
                            downlink.id, accepted(), status=SUBMITTED, now=NOW
                        )

            await asyncio.gather(worker(first, "one"), worker(second, "two"))
            assert all(len(ids) == 3 and ids == sorted(ids) for ids in order.values())
            assert await first.count_downlinks() == {"submitted": 300}
        finally:
            await first.close()
            await second.close()

    asyncio.run(main())
