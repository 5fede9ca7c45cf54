"""``tpas serve`` and ``tpas init``: run the server, write a starter configuration."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from tpas.config import load_settings
from tpas.errors import ConfigError
from tpas.interfaces.starter import starter_config

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``serve`` and ``init``."""
    p = commands.add_parser(
        "serve",
        help="receive ThingPark reports, store them, serve the API",
        description="Run the tpas server: POST /thingpark/{application} for reports, "
        "/api for data, /healthz, /readyz and /metrics for operations. SIGTERM or Ctrl-C "
        "finishes in-flight requests and the pending commit, then exits 0.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="TOML configuration")
    p.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log verbosity (default: info)",
    )
    p.set_defaults(run=run_serve)

    p = commands.add_parser(
        "init",
        help="write a commented starter configuration with a fresh API token",
        description="Write a starter tpas.toml with a freshly generated API token and AS key "
        "(replace the key with the one ThingPark generated for your AS profile).",
    )
    p.add_argument("--output", default="tpas.toml", metavar="FILE", help="default: tpas.toml")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--name", default="farm", help="application name (default: farm)")
    p.add_argument("--as-id", default="TWA_100000000.1000.AS", help="the AS profile's AS_ID")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    p.add_argument("--storage", default="sqlite:///tpas.db", help="storage URL")
    p.add_argument("--downlink-url", help="the network server's downlink endpoint")
    p.set_defaults(run=run_init)


def run_serve(args: argparse.Namespace) -> int:
    """Serve until stopped; exit 0 after a clean stop, 3 when startup failed."""
    # Imported here: the server stack is heavy and the other commands do not need it.
    from tpas.interfaces.server import serve

    settings = load_settings(args.config, os.environ)
    if not settings.applications:
        raise ConfigError("applications", "configure at least one [[applications]] entry")
    return serve(settings, log_level=args.log_level)


def run_init(args: argparse.Namespace) -> int:
    """Write the starter configuration and say what to do next."""
    path = Path(args.output)
    if path.exists() and not args.force:
        raise ConfigError("", f"{path} exists; pass --force to overwrite it")
    text = starter_config(
        api_token=secrets.token_urlsafe(32),
        as_key=secrets.token_hex(16),
        name=args.name,
        as_id=args.as_id,
        port=args.port,
        storage_url=args.storage,
        downlink_url=args.downlink_url,
    )
    try:
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
    except OSError as exc:
        raise ConfigError("", f"cannot write {path}: {exc.strerror or exc}") from exc
    print(f"wrote {path} (mode 600: it holds secrets)", file=sys.stderr)
    print(f"next: set as_id and as_keys from ThingPark, then: tpas serve --config {path}")
    return 0
