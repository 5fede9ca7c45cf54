"""Schemathesis against the OpenAPI document of a real ``tpas serve`` (QUALITY.md SEC-11, SEC-12).

Every operation of ``/openapi.json`` gets generated requests, valid and invalid by its own
schema, some without valid credentials; each answer must be no server error and must match
the document: a declared status code, content type and body schema; an operation that
needs the bearer token must refuse a request without it.

One check is left out: ``positive_data_acceptance`` (schema-valid input must be
accepted). ``POST /api/downlinks`` has rules across fields that JSON Schema cannot say
(a payload needs an FPort, a payload is needed unless the queue is flushed, a validity
time must parse), so a schema-valid body may rightly be answered 422, as documented.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, Final

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.server.conftest import API_TOKEN, Server, free_port, signed, start_server, write_config
from tpas.testing import make_uplink

EXAMPLES: Final = 40
"""Generated requests per operation: about 30 s for all of them on a shared machine."""
OPERATIONS: Final = [
    ("GET", "/api/devices"),
    ("GET", "/api/messages"),
    ("GET", "/api/messages/export"),
    ("GET", "/api/messages/{message_id}"),
    ("GET", "/api/messages/{message_id}/body"),
    ("POST", "/api/downlinks"),
    ("GET", "/api/downlinks"),
    ("GET", "/api/downlinks/{downlink_id}"),
    ("DELETE", "/api/downlinks/{downlink_id}"),
    ("POST", "/thingpark/{application}"),
]
STORED: Final = 5
"""Reports stored (and one downlink queued) before the run, so that ids hit existing rows."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a few reports and a downlink, whose downlink URL nobody listens on."""
    directory = tmp_path_factory.mktemp("schema")
    port = free_port()
    closed = free_port()
    config = write_config(
        directory,
        port,
        f"sqlite:///{directory / 'tpas.db'}",
        f'downlink_url = "http://127.0.0.1:{closed}/thingpark/lrc/rest/downlink"',
    )
    running = start_server(config, directory, port)
    for counter in range(1, STORED + 1):
        answer = running.post_report(signed(make_uplink("0018B20000000B20", fcnt_up=counter)))
        assert answer.status_code == 200, answer.text
    queued = running.client.post(
        "/api/downlinks",
        json={"application": "farm", "dev_eui": "0018B20000000B20", "fport": 1}
        | {"payload_hex": "01"},
    )
    assert queued.status_code == 202, queued.text
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def schema(server: Server) -> schemathesis.BaseSchema:
    """The OpenAPI document as the running server publishes it."""
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def test_every_operation_is_exercised(schema: schemathesis.BaseSchema) -> None:
    """The operations tested below are exactly those of the published document."""
    published = set()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        published.add((result.ok().method.upper(), result.ok().path))
    assert published == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_generated_requests_get_documented_answers(
    server: Server, schema: schemathesis.BaseSchema, method: str, path: str
) -> None:
    """Generated requests to one operation get no 5xx and answers that match the document."""
    operation = schema[path][method]
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, known=st.sampled_from((True, False)))
    def check(case: schemathesis.Case[Any], known: bool) -> None:
        if known:
            # Many requests name things that exist, to reach past the 404s.
            for name in ("message_id", "downlink_id"):
                if name in case.path_parameters:
                    case.path_parameters[name] = 1
            if "application" in case.path_parameters:
                case.path_parameters["application"] = "farm"
            if isinstance(case.body, dict) and "application" in case.body:
                case.body["application"] = "farm"
        if not schema.is_security_param_negated(case):
            # Schemathesis itself sends bad credentials when it tests authentication.
            case.headers["Authorization"] = f"Bearer {API_TOKEN}"
        response = case.call(base_url=server.url, timeout=10)
        statuses[response.status_code] += 1
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    started = time.perf_counter()
    check()
    seconds = time.perf_counter() - started
    summary = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    figures = f"{statuses.total()} requests in {seconds:.1f} s ({summary})"
    print(f"\n{method} {path}: {figures}")  # noqa: T201 - the figures for docs/reliability.md
    assert not any(status >= 500 for status in statuses)
    assert server.client.get("/healthz").status_code == 200
