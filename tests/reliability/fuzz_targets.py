"""Coverage-guided fuzz targets for tpas's hostile-input surface (QUALITY.md SEC-1, SEC-10).

Each target feeds arbitrary bytes to a :mod:`tpas.protocol` entry point and checks one
property: the input is either accepted, or refused with an error of the tpas tree
(:class:`tpas.errors.InputError`); any other exception, or a hang, is a crash. Accepted
inputs must also survive what tpas does with them next (round trips, verdict agreement).

Targets:

``decode``
    ``decode`` of a body in a format chosen by the first byte (typed JSON, untyped JSON,
    XML, or sniffed). A decoded model must round-trip: typed JSON gives the model back
    exactly; XML and untyped JSON, which carry unknown fields as text, reach a fixed point
    after one trip and keep the report's identity.
``check_report``
    ``check_report`` over a raw query line and a body (the ingest path), compared with
    ``parse`` + ``verify_report`` (the reference path): both must give the same verdict.
``downlink``
    ``sign_downlink`` with arbitrary parameters: a signed query must carry exactly the
    values that were hashed, and its token must be reproducible.

Run by hand for a longer campaign (libFuzzer options after the corpus directory; an empty
or missing directory is first filled with seeds built from ``tests/fixtures``)::

    .venv/bin/python tests/reliability/fuzz_targets.py decode /tmp/corpus-decode \\
        -max_total_time=600 -timeout=5 -artifact_prefix=/tmp/

A crash leaves its input in ``<artifact_prefix>crash-<sha1>``; replay it with
``.venv/bin/python tests/reliability/fuzz_targets.py decode <that file>``.
The test tier runs every target for a few seconds (tests/reliability/test_fuzz.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import atheris  # type: ignore[import-untyped]  # no type information published

with atheris.instrument_imports(include=["tpas"]):
    from tpas.errors import InputError
    from tpas.protocol import (
        DEFAULT_RECIPES,
        AsKey,
        BodyFormat,
        Document,
        DownlinkParams,
        body_elements,
        canonical_query,
        check_report,
        compute_token,
        decode,
        encode,
        parse,
        parse_query,
        sign_downlink,
        verify_report,
    )

FIXTURES: Final = Path(__file__).resolve().parents[1] / "fixtures"
KEY: Final = AsKey("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
OTHER_KEY: Final = AsKey("46ab678cd45df4a4e4b375Eacd096acc")
AS_ID: Final = "TWA_100000507.1111.AS"
NOW: Final = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TIME_TEXT: Final = "2026-01-01T13:00:00.000+01:00"  # NOW, as ThingPark writes it
FORMATS: Final = (BodyFormat.JSON, BodyFormat.JSON_UNTYPED, BodyFormat.XML, None)


def _format(selector: int) -> BodyFormat | None:
    return FORMATS[selector % len(FORMATS)]


# -- decode ---------------------------------------------------------------------------


def _round_trip(model: Document) -> None:
    """Encode ``model`` in every format and check what decoding gives back."""
    for fmt in BodyFormat:
        try:
            body = encode(model, fmt)
        except InputError:
            # Some received values have no rendering in a format (a field name or a
            # control character XML cannot carry): a refusal, not a crash.
            continue
        again = decode(body, fmt)
        if fmt is BodyFormat.JSON:
            assert again == model, f"typed JSON round trip changed the model: {model!r}"
            continue
        assert again.ROOT == model.ROOT, fmt
        assert getattr(again, "dev_eui", None) == getattr(model, "dev_eui", None), fmt
        assert getattr(again, "lrr_id", None) == getattr(model, "lrr_id", None), fmt
        third = decode(encode(again, fmt), fmt)
        assert third == again, f"{fmt} round trip is not stable: {again!r} -> {third!r}"


def fuzz_decode(data: bytes) -> None:
    """Any body decodes (and round-trips) or is refused with an InputError."""
    if not data:
        return
    fmt = _format(data[0])
    try:
        model = decode(data[1:], fmt)
    except InputError:
        return
    _round_trip(model)


def _decode_seeds() -> Iterator[bytes]:
    for path in sorted(FIXTURES.glob("*.json")) + sorted(FIXTURES.glob("*.xml")):
        if path.name == "token_test_vectors.json":
            continue
        body = path.read_bytes()
        for selector in range(len(FORMATS)):
            yield bytes([selector]) + body
    for path in sorted((FIXTURES / "hostile").glob("*.xml")):
        yield bytes([2]) + path.read_bytes()


# -- check_report -----------------------------------------------------------------------


def _split_report(data: bytes) -> tuple[BodyFormat, bool, str, bytes]:
    """``selector, query line, body``: the selector picks the format and freshness check."""
    fmt = _format(data[0]) or BodyFormat.JSON
    fresh = bool(data[0] & 0x10)
    line, _, body = data[1:].partition(b"\n")
    try:
        query = line.decode()
    except UnicodeDecodeError:
        query = line.decode("latin-1")  # as the report endpoint does
    return fmt, fresh, query, body


def fuzz_check_report(data: bytes) -> None:
    """The ingest check refuses or accepts exactly as parse + verify_report would."""
    if not data:
        return
    fmt, fresh, query, body = _split_report(data)
    now, drift = (NOW, 120.0) if fresh else (None, None)
    keys = (OTHER_KEY, KEY)
    try:
        checked = check_report(body, fmt, query, keys, as_id=AS_ID, now=now, max_drift=drift)
    except InputError:
        checked = None
    try:
        raw = parse(body, fmt)
    except InputError:
        # The body cannot be read: check_report must not have accepted it.
        assert checked is None or not checked.verdict.ok, "accepted an unreadable body"
        return
    verdict = verify_report(raw, query, keys, as_id=AS_ID, now=now, max_drift=drift)
    if checked is None:
        # Refused as a document: only a verified report whose identity is invalid gets
        # here, or a root check_report refuses on its own terms.
        assert verdict.ok or raw.root not in DEFAULT_RECIPES, "document error hid a verdict"
        return
    if raw.root not in DEFAULT_RECIPES:
        assert not checked.verdict.ok, "a request without a recipe was accepted"
        return
    assert checked.verdict.ok == verdict.ok, (checked.verdict, verdict)
    assert checked.verdict.reason == verdict.reason, (checked.verdict, verdict)
    if checked.verdict.ok:
        assert checked.model is not None
        assert checked.verdict.key_index == verdict.key_index
        assert checked.token == parse_query(query).values["Token"].lower()


def _signed_query(body: bytes, fmt: BodyFormat) -> str | None:
    """A query that signs ``body`` with KEY at NOW, or ``None`` when it cannot be read."""
    try:
        raw = parse(body, fmt)
    except InputError:
        return None
    recipe = DEFAULT_RECIPES.get(raw.root)
    elements = body_elements(recipe, raw.fields) if recipe else ""
    fport = raw.fields.get("FPort")
    values = {
        "LrnDevEui": str(raw.fields.get("DevEUI", "")),
        "LrnFPort": "0" if fport is None else str(fport),
        "LrnInfos": f"{AS_ID}-1-42",
        "AS_ID": AS_ID,
        "Time": TIME_TEXT,
    }
    token = compute_token(elements, canonical_query(values), KEY.reveal())
    # The Time's ':' and '+' percent-encoded, as ThingPark sends them (SPEC.md §3.1).
    encoded = {**values, "Time": TIME_TEXT.replace(":", "%3A").replace("+", "%2B")}
    return "&".join(f"{k}={v}" for k, v in encoded.items()) + f"&Token={token}"


def _check_report_seeds() -> Iterator[bytes]:
    for path in sorted(FIXTURES.glob("*.json")) + sorted(FIXTURES.glob("*.xml")):
        if path.name == "token_test_vectors.json":
            continue
        body = path.read_bytes()
        formats = [2] if path.suffix == ".xml" else [0, 1]
        for selector in formats:
            fmt = _format(selector) or BodyFormat.JSON
            query = _signed_query(body, fmt)
            if query is not None:
                yield bytes([selector | 0x10]) + query.encode() + b"\n" + body
    for path in sorted(FIXTURES.glob("*_query.txt")):
        # Captured queries as published (one "Name:value" per line).
        pairs = [line.strip().partition(":") for line in path.read_text().splitlines()]
        query = "&".join(f"{name}={value}" for name, _, value in pairs if name)
        body_path = path.with_name(path.name.replace("_query.txt", ".json"))
        yield bytes([0]) + query.encode() + b"\n" + body_path.read_bytes()


# -- downlink signing ---------------------------------------------------------------------


def _hex_or_text(provider: atheris.FuzzedDataProvider, size: int) -> str:
    """Mostly well-formed hex (so deeper checks are reached), sometimes any text."""
    if provider.ConsumeIntInRange(0, 3):
        text: str = provider.ConsumeBytes(size).hex()
        return text.upper() if provider.ConsumeBool() else text
    return str(provider.ConsumeUnicodeNoSurrogates(size * 2 + 2))


def fuzz_downlink(data: bytes) -> None:
    """Signing validates its inputs; a signed query carries exactly what was hashed."""
    provider = atheris.FuzzedDataProvider(data)
    validity: str | int | None
    choice = provider.ConsumeIntInRange(0, 2)
    if choice == 0:
        validity = None
    elif choice == 1:
        validity = provider.ConsumeInt(4)
    else:
        validity = provider.ConsumeUnicodeNoSurrogates(30)
    params = DownlinkParams(
        dev_eui=_hex_or_text(provider, 8),
        fport=provider.ConsumeIntInRange(-2, 260) if provider.ConsumeBool() else None,
        payload_hex=_hex_or_text(provider, 12) if provider.ConsumeBool() else None,
        confirmed=provider.ConsumeBool(),
        flush_queue=provider.ConsumeBool(),
        validity_time=validity,
        fcnt_dn=provider.ConsumeInt(4) if provider.ConsumeBool() else None,
        correlation_id=_hex_or_text(provider, 8) if provider.ConsumeBool() else None,
    )
    as_id = AS_ID if provider.ConsumeBool() else provider.ConsumeUnicodeNoSurrogates(30)
    time = TIME_TEXT if provider.ConsumeBool() else provider.ConsumeUnicodeNoSurrogates(40)
    try:
        signed = sign_downlink(params, as_id=as_id, key=KEY, time=time)
    except InputError:
        return
    assert signed.token == compute_token("", signed.hashed, KEY.reveal())
    assert signed.query.endswith(f"&Token={signed.token}")
    received = parse_query(signed.query).values
    hashed = dict(pair.split("=", 1) for pair in signed.hashed.split("&"))
    assert received == {**hashed, "Token": signed.token}, (received, hashed)


def _downlink_seeds() -> Iterator[bytes]:
    yield b"\x00" * 64
    yield bytes(range(256))
    yield b"0059AC0000000001" * 8


# -- running ------------------------------------------------------------------------------

TARGETS: Final[dict[str, tuple[Callable[[bytes], None], Callable[[], Iterator[bytes]]]]] = {
    "decode": (fuzz_decode, _decode_seeds),
    "check_report": (fuzz_check_report, _check_report_seeds),
    "downlink": (fuzz_downlink, _downlink_seeds),
}


def write_seeds(target: str, directory: Path) -> int:
    """Fill ``directory`` with the target's seed inputs; how many were written."""
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for count, seed in enumerate(TARGETS[target][1](), start=1):
        (directory / f"seed-{count:04d}").write_bytes(seed)
    return count


def main(argv: list[str]) -> None:
    """``fuzz_targets.py TARGET [CORPUS_DIR | INPUT_FILE ...] [libFuzzer options]``."""
    if len(argv) < 2 or argv[1] not in TARGETS:
        raise SystemExit(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [corpus] [-option=value]")
    target = argv[1]
    for arg in argv[2:]:
        path = Path(arg)
        # A corpus directory that is missing or empty gets the seeds; files are replayed.
        empty = not path.exists() or (path.is_dir() and not any(path.iterdir()))
        if not arg.startswith("-") and empty:
            write_seeds(target, path)
    atheris.Setup([argv[0], *argv[2:]], TARGETS[target][0])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
