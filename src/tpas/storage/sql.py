"""The SQL both database stores share, written once with the dialect's placeholder.

SQLite (``?``) and psycopg (``%s``) accept the same statements here; only the
placeholder differs. Column lists come from the port's dataclasses, so a field added to
:class:`NewReport` / :class:`StoredReport` needs only a migration.
"""

# S608 (SQL built from strings): every value goes through a placeholder; the f-strings
# here splice only constant column lists, constant clauses and the placeholder itself.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields
from operator import attrgetter
from typing import Any, Final

from tpas.storage.migrations import FRAME_TIME, UNTIMED_FRAME_KINDS
from tpas.storage.ports import DeviceSummary, NewReport, ReportQuery, StoredReport

__all__ = [
    "INSERT_CHUNK",
    "Statements",
    "duplicate_params",
    "fold_devices",
    "insert_params",
    "inserted_ids",
    "latest_params",
    "legacy_twins",
    "numbered_insert_rows",
    "to_stored",
]

INSERT_CHUNK: Final = 100
"""Reports per multi-row INSERT: 2,100 parameters, far below either database's limit."""

_INSERT_COLUMNS: Final = NewReport.__struct_fields__
_SELECT_COLUMNS: Final = tuple(f.name for f in fields(StoredReport))
_DEV_EUI_AT: Final = _INSERT_COLUMNS.index("dev_eui")
_insert_values: Final = attrgetter(*_INSERT_COLUMNS)


def _column_list(names: Iterable[str]) -> str:
    # Quoted because ``time`` is a type name in PostgreSQL.
    return ", ".join(f'"{name}"' for name in names)


class Statements:
    """The statements of one dialect, built once; ``ph`` is its parameter placeholder.

    - ``insert``: insert one report; returns its id, or no row when it is a duplicate.
    - ``find_duplicate``: the id of the row a duplicate collided with, by token first, else
      by frame key; parameters from :func:`duplicate_params`.
    - ``select_one``: one report by id.
    - ``select_body``: the original body and content type of one report, by id.
    """

    __slots__ = (
        "_inserts",
        "_latest",
        "_legacy",
        "find_duplicate",
        "insert",
        "ph",
        "select_body",
        "select_one",
    )

    def __init__(self, ph: str) -> None:
        self.ph = ph
        self.insert = (
            f"INSERT INTO reports ({_column_list(_INSERT_COLUMNS)}) "
            f"VALUES ({', '.join([ph] * len(_INSERT_COLUMNS))}) "
            "ON CONFLICT DO NOTHING RETURNING id"
        )
        # One lookup per unique index (migrations._REPORT_KEYS), each led by its time.
        self.find_duplicate = (
            "SELECT id FROM ("
            f"SELECT id, 0 AS pref FROM reports WHERE application = {ph} "
            f"AND signed_at = {ph} AND token = {ph} "
            f"UNION ALL SELECT id, 0 FROM reports WHERE application = {ph} "
            f"AND signed_at IS NULL AND token = {ph} "
            f"UNION ALL SELECT id, 1 FROM reports WHERE application = {ph} "
            f"AND ({FRAME_TIME}) = {ph} AND frame_key = {ph}"
            ") AS found ORDER BY pref LIMIT 1"
        )
        self.select_one = f"SELECT {_column_list(_SELECT_COLUMNS)} FROM reports WHERE id = {ph}"
        self.select_body = f"SELECT body, content_type FROM reports WHERE id = {ph}"
        self._inserts: dict[tuple[int, bool], str] = {}
        self._latest: dict[int, str] = {}
        self._legacy: dict[int, str] = {}

    def latest_by_token(self, reports: int) -> str:
        """(id, application, token) of the stored rows whose (application, signed_at,
        token) is one of ``reports`` distinct triples, newest first, at most as many as the
        last parameter says."""
        statement = self._latest.get(reports)
        if statement is None:
            statement = self._latest[reports] = self._rows_by_keys(
                reports,
                3,
                "r.application = k.column1 AND r.signed_at = k.column2 "
                f"AND r.token = k.column3 ORDER BY r.id DESC LIMIT {self.ph}",
            )
        return statement

    def legacy_tokens(self, reports: int) -> str:
        """(id, application, token) of the rows stored before schema version 4 (no
        signed_at) whose (application, token) is one of ``reports`` pairs."""
        statement = self._legacy.get(reports)
        if statement is None:
            statement = self._legacy[reports] = self._rows_by_keys(
                reports,
                2,
                "r.signed_at IS NULL AND r.application = k.column1 AND r.token = k.column2",
            )
        return statement

    def _rows_by_keys(self, keys: int, width: int, condition: str) -> str:
        # The keys (``width`` values each, k.column1...) first, CROSS JOIN keeping that
        # order in SQLite, each then looked up in an index: as a row-value IN, SQLite
        # scanned the table.
        values = ", ".join([f"({', '.join([self.ph] * width)})"] * keys)
        return (
            "SELECT r.id, r.application, r.token "
            f"FROM (VALUES {values}) AS k CROSS JOIN reports AS r WHERE {condition}"
        )

    def insert_rows(self, rows: int, *, returning: bool = True) -> str:
        """``INSERT ... VALUES (...), (...) ON CONFLICT DO NOTHING RETURNING id,
        application, token`` for ``rows`` reports (built once per row count); without the
        RETURNING clause when ``returning`` is false.

        One statement per batch rather than one per report: a single round of parameter
        binding and a single result set, where per-report statements cost the event loop
        (or the SQLite writer, which retakes the GIL around every call) far more.
        """
        statement = self._inserts.get((rows, returning))
        if statement is None:
            head, _, tail = self.insert.partition(" VALUES ")
            one = tail.partition(" ON CONFLICT")[0]
            values = ", ".join([one] * rows)
            statement = f"{head} VALUES {values} ON CONFLICT DO NOTHING"
            if returning:
                statement += " RETURNING id, application, token"
            self._inserts[rows, returning] = statement
        return statement

    def query(self, query: ReportQuery) -> tuple[str, list[Any]]:
        """A filtered page of reports, newest first, and its parameters."""
        p = self.ph
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (
            (f"application = {p}", query.application),
            (f"dev_eui = {p}", None if query.dev_eui is None else query.dev_eui.upper()),
            (f"kind = {p}", query.kind),
            (f"time_ts >= {p}", query.since),
            (f"time_ts < {p}", query.until),
            (f"id < {p}", query.before_id),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        params.append(max(query.limit, 0))  # SQLite reads a negative LIMIT as "no limit"
        sql = (
            f"SELECT {_column_list(_SELECT_COLUMNS)} FROM reports{condition} "
            f"ORDER BY id DESC LIMIT {p}"
        )
        return sql, params

    def device_counts(self, application: str | None) -> tuple[str, list[Any]]:
        """Rows of (application, dev_eui, kind, count, last received_at)."""
        only, params = self._only(application)
        sql = (
            "SELECT application, dev_eui, kind, COUNT(*), MAX(received_at) FROM reports "
            f"WHERE dev_eui IS NOT NULL{only} GROUP BY application, dev_eui, kind"
        )
        return sql, params

    def device_radio(self, application: str | None) -> tuple[str, list[Any]]:
        """Rows of (application, dev_eui, rssi, snr) from each device's latest report with RSSI."""
        only, params = self._only(application)
        sql = (
            "SELECT r.application, r.dev_eui, r.rssi, r.snr FROM reports r JOIN ("
            "SELECT MAX(id) AS id FROM reports "
            f"WHERE rssi IS NOT NULL AND dev_eui IS NOT NULL{only} "
            "GROUP BY application, dev_eui) latest ON r.id = latest.id"
        )
        return sql, params

    def _only(self, application: str | None) -> tuple[str, list[Any]]:
        if application is None:
            return "", []
        return f" AND application = {self.ph}", [application]


_numbered_inserts: dict[int, str] = {}


def numbered_insert_rows(rows: int) -> str:
    """:meth:`Statements.insert_rows` for ``rows`` reports (with its RETURNING clause) in
    PostgreSQL's own placeholders, ``$1`` to ``$n``; built once per row count.

    For psycopg's raw cursor, which sends the statement as it is: with ``%s`` placeholders
    psycopg rewrites every statement on the client, and one this long is beyond its cache,
    so a batch would be parsed again each time.
    """
    statement = _numbered_inserts.get(rows)
    if statement is None:
        width = len(_INSERT_COLUMNS)
        values = ", ".join(
            f"({', '.join(f'${n}' for n in range(row * width + 1, (row + 1) * width + 1))})"
            for row in range(rows)
        )
        statement = (
            f"INSERT INTO reports ({_column_list(_INSERT_COLUMNS)}) VALUES {values} "
            "ON CONFLICT DO NOTHING RETURNING id, application, token"
        )
        _numbered_inserts[rows] = statement
    return statement


def insert_params(report: NewReport) -> tuple[Any, ...]:
    """The parameters of :attr:`Statements.insert`; the DevEUI is stored upper case."""
    values: tuple[Any, ...] = _insert_values(report)
    if report.dev_eui is not None:
        values = (*values[:_DEV_EUI_AT], report.dev_eui.upper(), *values[_DEV_EUI_AT + 1 :])
    return values


_UNTIMED: Final = frozenset(UNTIMED_FRAME_KINDS)


def duplicate_params(report: NewReport) -> tuple[Any, ...]:
    """The parameters of :attr:`Statements.find_duplicate` for ``report``."""
    app, token = report.application, report.token
    frame_time = "" if report.kind in _UNTIMED else report.time or ""  # as FRAME_TIME
    return (app, report.signed_at, token, app, token, app, frame_time, report.frame_key)


def latest_params(reports: Sequence[NewReport], limit: int) -> tuple[int, list[Any]]:
    """For :meth:`Statements.latest_by_token`: how many distinct keys ``reports`` have, and
    the parameters. Each key once: a key repeated would return its row as many times."""
    keys = dict.fromkeys((r.application, r.signed_at, r.token) for r in reports)
    params: list[Any] = [value for key in keys for value in key]
    params.append(limit)
    return len(keys), params


def legacy_twins(reports: Sequence[NewReport], rows: Iterable[Sequence[Any]]) -> dict[int, int]:
    """Which of ``reports`` repeat the token of a row stored before schema version 4, by
    position, with that row's id; ``rows`` are what :meth:`Statements.legacy_tokens`
    returned."""
    found = {(application, token): row_id for row_id, application, token in rows}
    return {
        i: found[r.application, r.token]
        for i, r in enumerate(reports)
        if (r.application, r.token) in found
    }


def inserted_ids(
    reports: Sequence[NewReport], returned: Iterable[Sequence[Any]]
) -> list[int | None]:
    """For each report of a :meth:`Statements.insert_rows` statement, the id it was stored
    under, or ``None`` when it was not inserted (a duplicate, of a stored row or of an
    earlier report of the same statement). ``returned`` holds the (id, application, token)
    rows, in any order."""
    inserted = {(application, token): row_id for row_id, application, token in returned}
    claimed: set[tuple[str, str]] = set()
    ids: list[int | None] = []
    for report in reports:
        key = (report.application, report.token)
        ids.append(inserted.get(key) if key not in claimed else None)
        claimed.add(key)
    return ids


def to_stored(row: Sequence[Any]) -> StoredReport:
    """A row selected with the report columns, as a :class:`StoredReport`."""
    return StoredReport(*row)


def fold_devices(
    counts: Iterable[Sequence[Any]], radio: Iterable[Sequence[Any]]
) -> list[DeviceSummary]:
    """Combine :meth:`Statements.device_counts` and :meth:`Statements.device_radio` rows.

    Sorted here rather than in SQL: PostgreSQL's collation and SQLite's byte order differ.
    """
    seen: dict[tuple[str, str], tuple[float, dict[str, int]]] = {}
    for application, dev_eui, kind, count, last_seen in counts:
        previous, by_kind = seen.get((application, dev_eui), (float("-inf"), {}))
        by_kind[kind] = int(count)
        seen[application, dev_eui] = (max(previous, float(last_seen)), by_kind)
    last_radio = {(app, dev): (rssi, snr) for app, dev, rssi, snr in radio}
    return [
        DeviceSummary(
            application=application,
            dev_eui=dev_eui,
            last_seen=last_seen,
            counts=by_kind,
            last_rssi=last_radio.get((application, dev_eui), (None, None))[0],
            last_snr=last_radio.get((application, dev_eui), (None, None))[1],
        )
        for (application, dev_eui), (last_seen, by_kind) in sorted(seen.items())
    ]
