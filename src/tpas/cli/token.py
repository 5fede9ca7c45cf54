"""``tpas token``: check a report's token, sign a downlink (SPEC.md §3, §4).

``check`` exits 0 when the token verifies and 1 when it does not, and shows what was
hashed, the key masked: ``<body elements><query string>********************************``.
``sign-downlink`` prints the signed query (or URL). Neither ever prints a key.
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

from tpas.cli.inputs import MASK, add_key_option, load_keys, read_body
from tpas.errors import DownlinkParameterError, InputError
from tpas.protocol import (
    DEFAULT_RECIPES,
    DOWNLINK_PATH_V1,
    DOWNLINK_PATH_V2,
    BodyFormat,
    DownlinkParams,
    RawDocument,
    Verdict,
    body_elements,
    canonical_query,
    parse,
    parse_query,
    sign_downlink,
    verify_report,
)

__all__ = ["check", "register", "sign"]

# DownlinkParams field -> the option that sets it, so errors name what the user typed.
_OPTIONS: Final = {
    "dev_eui": "--dev-eui",
    "fport": "--fport",
    "payload_hex": "--payload",
    "fcnt_dn": "--fcnt-dn",
    "correlation_id": "--correlation-id",
    "validity_time": "--validity-time",
    "as_id": "--as-id",
    "time": "--time",
}


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``token check`` and ``token sign-downlink``."""
    group = commands.add_parser(
        "token",
        help="check a report token, sign a downlink",
        description="Report tokens (NS to AS) and downlink signatures (AS to NS).",
    )
    actions = group.add_subparsers(title="actions", dest="action", required=True, metavar="ACTION")

    p = actions.add_parser(
        "check",
        help="verify the token of a received report",
        description="Verify a report's token as tpas would, and show what was hashed. "
        "Exit status: 0 valid, 1 invalid, 2 unusable input.",
    )
    p.add_argument("body", metavar="BODY_FILE", help="the report body, JSON or XML; - for stdin")
    p.add_argument(
        "--query",
        required=True,
        metavar="RAW_QUERY",
        help="the query string as received, Token included (a whole URL also works)",
    )
    add_key_option(p, repeat=True)
    p.add_argument("--as-id", metavar="ID", help="also require this AS_ID (case-insensitive)")
    p.add_argument(
        "--max-drift",
        type=float,
        metavar="SECONDS",
        help="also require the query Time within SECONDS of now (UTC); unchecked by default",
    )
    p.add_argument("--format", choices=("json", "xml"), help="the body format (default: sniffed)")
    p.add_argument("--json", action="store_true", help="print the result as a JSON object")
    p.set_defaults(run=check)

    p = actions.add_parser(
        "sign-downlink",
        help="print a signed downlink query string",
        description="Sign a downlink request (SPEC.md §4) and print its query string, "
        "Token last, ready to append to the downlink URL after '?'.",
    )
    p.add_argument("--dev-eui", required=True, metavar="HEX", help="16 hex digits")
    p.add_argument("--fport", type=int, metavar="N", help="1 to 224; required with --payload")
    p.add_argument("--payload", metavar="HEX", help="1 to 250 bytes in hex")
    p.add_argument("--as-id", required=True, metavar="ID", help="the AS_ID parameter")
    add_key_option(p, repeat=False)
    p.add_argument(
        "--time",
        metavar="ISO8601",
        help="the Time parameter, used verbatim (default: now in UTC, with milliseconds)",
    )
    p.add_argument("--confirmed", action="store_true", help="ask for a confirmed downlink")
    p.add_argument("--flush-queue", action="store_true", help="purge the device queue first")
    p.add_argument(
        "--validity-time",
        metavar="ISO8601_OR_SECONDS",
        help="discard the downlink if not sent by then (a time, or seconds from now)",
    )
    p.add_argument("--fcnt-dn", type=int, metavar="N", help="for a payload the AS encrypted")
    p.add_argument("--correlation-id", metavar="HEX", help="16 hex digits")
    p.add_argument(
        "--url",
        metavar="BASE",
        help="print the whole URL on BASE (https://host), v1 path unless --v2",
    )
    p.add_argument("--v2", action="store_true", help="with --url: the v2 downlink path")
    p.add_argument("--json", action="store_true", help="print query, token and URL as JSON")
    p.set_defaults(run=sign)


def _raw_query(text: str) -> str:
    """The query part of a pasted URL, or the text itself."""
    if text.startswith(("http://", "https://", "/")):
        return text.partition("?")[2]
    return text


def _format(name: str | None) -> BodyFormat | None:
    return BodyFormat(name) if name else None


def check(args: argparse.Namespace) -> int:
    """``tpas token check``: 0 when the token verifies, 1 when it does not."""
    keys = load_keys(args.key)
    max_drift: float | None = args.max_drift
    if max_drift is not None and not (math.isfinite(max_drift) and max_drift >= 0):
        raise InputError("--max-drift: must be a number of seconds, 0 or more")
    doc = parse(read_body(args.body), _format(args.format))
    raw_query = _raw_query(args.query)
    # The one clock read, here at the edge; the verifier itself is pure.
    now = datetime.now(UTC) if max_drift is not None else None
    verdict = verify_report(doc, raw_query, keys, as_id=args.as_id, now=now, max_drift=max_drift)
    report = _check_report(doc, raw_query, verdict, len(keys))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_check(report, len(keys))
    return 0 if verdict.ok else 1


def _check_report(
    doc: RawDocument, raw_query: str, verdict: Verdict, n_keys: int
) -> dict[str, Any]:
    recipe = DEFAULT_RECIPES.get(doc.root)
    # Shown even when the check stopped before hashing: what *would* be hashed helps too.
    elements = body_elements(recipe, doc.fields) if recipe else ""
    query_string = canonical_query(parse_query(raw_query).values)
    return {
        "valid": verdict.ok,
        "verdict": "VALID" if verdict.ok else "INVALID",
        "reason": verdict.reason.value if verdict.reason else None,
        "explanation": verdict.detail,
        "key_index": verdict.key_index,
        "key_lowercased": verdict.key_lowercased,
        "keys_tried": n_keys,
        "report_type": doc.root,
        "body_format": doc.format.value,
        "recipe": str(recipe) if recipe else None,
        "body_elements": elements,
        "query_string": query_string,
        "hashed_input": f"{elements}{query_string}{MASK}",
        "query_time": _time(verdict.query_time),
    }


def _time(moment: datetime | None) -> str | None:
    """The parsed query Time (an offset-less Time shows as UTC), as precise as given."""
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds" if moment.microsecond % 1000 == 0 else "auto")


def _print_check(report: dict[str, Any], n_keys: int) -> None:
    index = report["key_index"]
    if index is None:
        key = "none"
    else:
        how = "only once lower-cased" if report["key_lowercased"] else "as given"
        key = f"index {index} (--key #{index + 1} of {n_keys}), {how}"
    rows = [
        ("verdict", report["verdict"]),
        ("reason", report["reason"] or "-"),
        ("explanation", report["explanation"]),
        ("matched key", key),
        ("report type", report["report_type"]),
        ("recipe", report["recipe"] or "- (no token recipe for this document)"),
        ("body elements", report["body_elements"]),
        ("query string", report["query_string"]),
        ("hashed input", report["hashed_input"]),
        ("query time", report["query_time"] or "-"),
    ]
    for label, value in rows:
        print(f"{label + ':':<15}{value}")


def sign(args: argparse.Namespace) -> int:
    """``tpas token sign-downlink``: print the signed query string (or URL)."""
    (key,) = load_keys([args.key])
    if args.v2 and not args.url:
        raise InputError("--v2: only meaningful with --url")
    params = DownlinkParams(
        dev_eui=args.dev_eui,
        fport=args.fport,
        payload_hex=args.payload,
        confirmed=args.confirmed,
        flush_queue=args.flush_queue,
        validity_time=_validity(args.validity_time),
        fcnt_dn=args.fcnt_dn,
        correlation_id=args.correlation_id,
    )
    # The one clock read, here at the edge, when no --time is given.
    time: datetime | str = args.time if args.time is not None else datetime.now(UTC)
    try:
        signed = sign_downlink(params, as_id=args.as_id, key=key, time=time)
    except DownlinkParameterError as exc:
        raise DownlinkParameterError(_OPTIONS.get(exc.field, exc.field), exc.detail) from exc
    url = None
    if args.url:
        path = DOWNLINK_PATH_V2 if args.v2 else DOWNLINK_PATH_V1
        url = f"{_base(args.url)}{path}?{signed.query}"
    if args.json:
        out = {
            "query": signed.query,
            "url": url,
            "token": signed.token,
            "hashed_input": f"{signed.hashed}{MASK}",
        }
        print(json.dumps(out, indent=2))
    else:
        print(url or signed.query)
    return 0


def _validity(text: str | None) -> str | int | None:
    """``ValidityTime``: digits are a lifetime in seconds, anything else a timestamp."""
    return int(text) if text and text.isascii() and text.isdigit() else text


def _base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        # The value is not repeated: a URL may carry credentials.
        raise InputError("--url: expected a base such as https://host or https://host:port")
    return url.rstrip("/")
