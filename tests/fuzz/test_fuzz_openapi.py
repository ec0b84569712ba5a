"""Schemathesis against the OpenAPI that a live gateway serves (every operation, with an API key):
no answer is a 5xx, and every answer conforms to the schema (status codes, content types, bodies).

Hypothesis drives schemathesis's case strategies directly (its pytest plugin does not load under
pytest 9). Examples per operation: 25 by default, HARMONIA_FUZZ_EXAMPLES for more (read when the
tests are collected)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from harmonia.config import Settings
from harmonia.embedded import EmbeddedValkey
from helpers import ServerThread, make_gateway

EXAMPLES = int(os.environ.get("HARMONIA_FUZZ_EXAMPLES", "25"))
AUTH = {"Authorization": "Bearer fuzz-key"}


@pytest.fixture(scope="module")
def live_gateway(valkey: EmbeddedValkey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("fuzz")
    opts = {"sync_timeout_s": 0.2}  # no worker runs: sync submissions answer 202 quickly
    cfg = Settings(redis_url=valkey.url, data_dir=data, api_keys=[SecretStr("fuzz-key")], **opts)
    with ServerThread(make_gateway(cfg)) as gw:
        yield gw.url


def fuzz_all(url: str, checks: list[Callable[..., Any]]) -> dict[str, str]:
    """Run every operation of the served schema; returns {operation: first failure}."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8, [op.label for op in operations]
    for op in operations:

        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
        )
        @given(case=op.as_strategy())
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=AUTH, checks=checks, timeout=30)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # check failures for this operation
            failures[op.label] = f"{type(exc).__name__}: {str(exc)[:600]}"
    return failures


def test_no_server_errors(live_gateway: str) -> None:
    failures = fuzz_all(live_gateway, [not_a_server_error])
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())


def test_responses_conform_to_the_schema(live_gateway: str) -> None:
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    failures = fuzz_all(live_gateway, checks)
    print("\nschema conformance failures:\n" + "\n\n".join(f"{k}: {v}" for k, v in failures.items()))
    assert not failures
