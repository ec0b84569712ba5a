"""Property tests for payload validation: whatever JSON a client sends, `JobRequest` and the
registry's `validate()` either accept it (and what they accept is stable, serializable JSON) or
reject it with InvalidInput naming a payload field; never another exception."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from harmonia.config import Settings
from harmonia.engines.registry import Registry
from harmonia.errors import EngineUnavailable, InvalidInput
from harmonia.jobs.models import JobRequest

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)

NOOP_KEYS = ["sleep_s", "steps", "fail", "note", "artifact"]
noop_like = st.dictionaries(
    st.sampled_from([*NOOP_KEYS, "other"]),
    scalars | st.sampled_from(["none", "error", "retryable"]) | st.floats(0, 3600) | st.integers(1, 10_000),
    max_size=5,
)


@pytest.fixture(scope="module")
def registry() -> Registry:
    # service URLs make the musicgen and diffsinger schemas validatable without their extras
    return Registry(Settings(musicgen_url="http://127.0.0.1:9", diffsinger_url="http://127.0.0.1:9"))


def _strict_json(value: Any) -> str:
    return json.dumps(value, allow_nan=False)  # what the API's JSON responses require


@PROPS
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "model": st.text(max_size=70) | st.sampled_from(["noop", "jen1", "render"]),
            "mode": st.sampled_from(["sync", "async"]) | st.text(max_size=8),
            "payload": st.dictionaries(st.text(max_size=8), json_values, max_size=4) | json_values,
            "webhook_url": st.none() | st.text(max_size=40) | st.just("https://example.com/hook"),
            "priority": st.integers(-20, 20) | scalars,
            "timeout_s": st.none() | st.floats() | st.integers(),
            "extra": json_values,
        },
    )
)
def test_job_request_accepts_or_rejects_cleanly(body: dict[str, Any]) -> None:
    try:
        req = JobRequest.model_validate(body)
    except ValidationError as exc:
        assert exc.errors()  # a reason per field
        return
    assert JobRequest.model_validate_json(req.model_dump_json()) == req
    assert -10 <= req.priority <= 10 and (req.timeout_s is None or (req.timeout_s > 0))
    if req.timeout_s is not None:
        assert not math.isnan(req.timeout_s)


@PROPS
@given(payload=noop_like)
def test_noop_validate_is_clean_and_idempotent(registry: Registry, payload: dict[str, Any]) -> None:
    _check_validate(registry, "noop", payload)


@pytest.mark.parametrize("model", ["jen1", "render", "musicgen", "diffsinger", "ollama"])
@PROPS
@given(payload=st.dictionaries(st.text(max_size=12), json_values, max_size=5))
def test_every_model_validate_is_clean(registry: Registry, model: str, payload: dict[str, Any]) -> None:
    _check_validate(registry, model, payload)


def _check_validate(registry: Registry, model: str, payload: dict[str, Any]) -> None:
    try:
        accepted = registry.validate(model, payload)
    except InvalidInput as exc:
        assert exc.field and exc.field.startswith("payload"), exc.field
        return
    except EngineUnavailable:
        return
    _strict_json(accepted)
    assert registry.validate(model, accepted) == accepted  # stable: what is stored validates again
