"""``tpas downlink send|list|show|cancel``: the downlink API from the command line.

Talks to a running ``tpas serve`` (``--url``, default ``$TPAS_URL`` or
``http://127.0.0.1:8080``) with a bearer token from ``$TPAS_API_TOKEN`` (or ``--token``).
The token is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

from tpas.errors import InputError

__all__ = ["register"]


class ApiCallError(InputError):
    """The server refused the call or could not be reached."""

    reason = "api_error"


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``downlink`` and its subcommands."""
    group = commands.add_parser(
        "downlink",
        help="send and follow downlinks through a running tpas server",
        description="Send downlinks and follow them, through a running tpas server's API. "
        "The API token comes from $TPAS_API_TOKEN (or --token).",
    )
    sub = group.add_subparsers(dest="downlink_command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--url",
            default=os.environ.get("TPAS_URL", "http://127.0.0.1:8080"),
            help="the tpas server (default: $TPAS_URL or http://127.0.0.1:8080)",
        )
        p.add_argument("--token", help="API bearer token (default: $TPAS_API_TOKEN)")
        p.add_argument("--json", action="store_true", help="print the raw JSON answer")

    p = sub.add_parser("send", help="queue a downlink")
    common(p)
    p.add_argument("--application", required=True, help="configured application name")
    p.add_argument("--dev-eui", required=True, help="16 hex digits")
    p.add_argument("--fport", type=int, help="1 to 224 (required with a payload)")
    p.add_argument("--payload", help="payload in hex")
    p.add_argument("--confirmed", action="store_true", help="ask for a confirmed downlink")
    p.add_argument("--flush-queue", action="store_true", help="purge the device queue first")
    p.add_argument("--validity-time", help="ISO-8601 time or a number of seconds")
    p.add_argument("--fcnt-dn", type=int, help="only for AS-encrypted payloads")
    p.add_argument("--idempotency-key", help="the same key never queues a second downlink")
    p.set_defaults(run=_send)

    p = sub.add_parser("list", help="list downlinks, newest first")
    common(p)
    p.add_argument("--application")
    p.add_argument("--dev-eui")
    p.add_argument("--status", help="queued, submitted, sent, failed, ...")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(run=_list)

    p = sub.add_parser("show", help="one downlink with its attempts and delivery report")
    common(p)
    p.add_argument("id", type=int)
    p.set_defaults(run=_show)

    p = sub.add_parser("cancel", help="cancel a downlink that was not submitted yet")
    common(p)
    p.add_argument("id", type=int)
    p.set_defaults(run=_cancel)


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    token = args.token or os.environ.get("TPAS_API_TOKEN")
    if not token:
        raise ApiCallError("no API token: set TPAS_API_TOKEN or pass --token")
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    try:
        response = httpx.request(
            method, f"{args.url.rstrip('/')}{path}", headers=headers, timeout=15, **kwargs
        )
    except httpx.HTTPError as exc:
        raise ApiCallError(f"cannot reach {args.url}: {type(exc).__name__}") from exc
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        detail = data.get("detail") if isinstance(data, dict) else response.text[:200]
        code = data.get("error") if isinstance(data, dict) else response.status_code
        raise ApiCallError(f"{response.status_code} {code}: {detail}")
    return data


def _print_downlink(d: dict[str, Any]) -> None:
    print(f"downlink {d['id']}  {d['status']}  {d['application']}/{d['dev_eui']}")
    print(f"  correlation id  {d['correlation_id']}")
    print(f"  fport/payload   {d['fport']} / {d['payload_hex']}")
    print(f"  created         {d['created_at']}   expires {d['expires_at']}")
    if d.get("submitted_at"):
        print(f"  submitted       {d['submitted_at']}")
    if d.get("finished_at"):
        print(f"  finished        {d['finished_at']}  {d.get('detail') or ''}")
    for a in d.get("attempts", []):
        status = a["http_status"] if a["http_status"] is not None else "-"
        print(f"  attempt {a['number']}  {a['at']}  {a['outcome']}  {status}  {a['message']}")
    delivery = d.get("delivery")
    if delivery:
        print(f"  delivery        {json.dumps(delivery, sort_keys=True)}")


def _send(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "application": args.application,
        "dev_eui": args.dev_eui,
        "fport": args.fport,
        "payload_hex": args.payload,
        "confirmed": args.confirmed,
        "flush_queue": args.flush_queue,
        "fcnt_dn": args.fcnt_dn,
    }
    if args.validity_time is not None:
        text = args.validity_time
        body["validity_time"] = int(text) if text.isdigit() else text
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    data = _call(args, "POST", "/api/downlinks", json=body, headers=headers)
    if args.json:
        print(json.dumps(data))
    else:
        print(f"queued downlink {data['id']} (correlation id {data['correlation_id']})")
    return 0


def _list(args: argparse.Namespace) -> int:
    params = {
        k: v
        for k, v in {
            "application": args.application,
            "dev_eui": args.dev_eui,
            "status": args.status,
            "limit": args.limit,
        }.items()
        if v is not None
    }
    data = _call(args, "GET", "/api/downlinks", params=params)
    if args.json:
        print(json.dumps(data))
        return 0
    for d in data["items"]:
        attempts = len(d["attempts"])
        print(
            f"{d['id']:>6}  {d['status']:<10} {d['application']}/{d['dev_eui']}  "
            f"port {d['fport']}  {d['payload_hex']}  attempts {attempts}  {d['created_at']}"
        )
    if not data["items"]:
        print("no downlinks", file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    data = _call(args, "GET", f"/api/downlinks/{args.id}")
    if args.json:
        print(json.dumps(data))
    else:
        _print_downlink(data)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    data = _call(args, "DELETE", f"/api/downlinks/{args.id}")
    if args.json:
        print(json.dumps(data))
    else:
        print(f"downlink {data['id']} is {data['status']}")
    return 0
