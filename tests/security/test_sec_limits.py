"""Request size and shape limits, and the per-key rate limit across gateway replicas.

Already covered elsewhere (not repeated): a declared Content-Length over the limit -> 413 and
malformed JSON -> 422, a rate limit of one gateway with Retry-After (tests/gateway/test_gateway_api.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from harmonia.config import Settings
from harmonia.engines.registry import Registry
from helpers import ServerThread, make_gateway

MAX_BODY = 64 * 1024


@pytest.fixture
def small(settings: Settings) -> Iterator[httpx.Client]:
    settings.max_body_bytes = MAX_BODY
    with ServerThread(make_gateway(settings)) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:
        yield client


def test_chunked_body_over_the_limit_is_413_without_content_length(small: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "noop", "payload": {"note": "'
        for _ in range(40):
            yield b"x" * 4096  # 160 KiB in all, no Content-Length
        yield b'"}}'

    r = small.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert small.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({"model": "noop", "payload": {"note": "x" * 1001}}, {}, "payload.note"),
        ({"model": "noop", "payload": {"steps": 10_001}}, {}, "payload.steps"),
        ({"model": "n" * 65, "payload": {}}, {}, "model"),
        ({"model": "noop", "payload": {}, "webhook_url": "https://" + "a" * 2050}, {}, "webhook_url"),
        ({"model": "noop", "payload": {}, "priority": 11}, {}, "priority"),
        ({"model": "noop", "payload": {}}, {"Idempotency-Key": "k" * 256}, "Idempotency-Key"),
    ],
)
def test_field_limits_are_422_on_the_field(
    small: httpx.Client, body: dict[str, Any], headers: dict[str, str], field: str
) -> None:
    r = small.post("/v1/jobs", json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "noop", "payload": {"note": ' + b"[" * 30_000 + b"]" * 30_000 + b"}}",
        b'{"model": "noop", "payload": {}, "priority": ' + b"9" * 20_000 + b"}",
        b'{"model": "noop", "payload": {"sleep_s": 1e999}}',
        b'{"model": "noop", "payload": {"sleep_s": NaN}}',
        b'{"model": "noop", "payload": {' + b",".join(b'"k%d": 1' % i for i in range(5000)) + b"}}",
        b'{"model": "noop", "payload": {"note": "\\ud800"}}',
        b'{"model": "noop", "model": "noop", "payload": {}}',
    ],
    ids=["deep-nesting", "huge-int", "inf", "nan", "many-keys", "lone-surrogate", "duplicate-key"],
)
def test_hostile_json_is_a_4xx_never_a_5xx(small: httpx.Client, raw: bytes) -> None:
    r = small.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500 or r.status_code == 202, (r.status_code, r.text[:300])
    assert "error" in r.json() or r.status_code == 202
    if r.status_code != 202:  # only documented codes: never a bare 400 `http_error`
        assert r.json()["error"]["code"] in {"invalid_json", "invalid_input", "too_large"}, r.text
    assert small.get("/healthz").status_code == 200


@pytest.mark.parametrize("depth", [65, 5000, 30_000])
def test_deeply_nested_json_is_422_invalid_json(small: httpx.Client, depth: int) -> None:
    raw = b'{"model": "noop", "payload": {"note": ' + b"[" * depth + b"]" * depth + b"}}"
    r = small.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text[:300]
    assert r.json()["error"]["code"] == "invalid_json" and "deeper than" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"model": "noop", "payload": {"sleep_s": NaN}}', "payload.sleep_s"),
        (b'{"model": "noop", "payload": {"sleep_s": -Infinity}}', "payload.sleep_s"),
        (b'{"model": "noop", "payload": {"sleep_s": 1e999}}', "payload.sleep_s"),
        (b'{"model": "noop", "payload": {}, "timeout_s": NaN}', "timeout_s"),
        (b'{"model": "jen1", "payload": {"instructions": "x", "sections": [{"name": "a", "bars": NaN}]}}',
         "payload.sections.0.bars"),
    ],
)  # fmt: skip
def test_non_finite_numbers_are_422_on_the_field(small: httpx.Client, raw: bytes, field: str) -> None:
    r = small.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field and err["message"] == f"{field}: must be a finite number"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"model": "noop", "payload": {}}', "text/plain"),
        (b"model=noop&payload=x", "application/x-www-form-urlencoded"),
        (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nnoop\r\n--b--\r\n',
         "multipart/form-data; boundary=b"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_declared_json_is_415(
    small: httpx.Client, content: bytes, content_type: str
) -> None:
    for path in ("/v1/jobs", "/job"):
        r = small.post(path, content=content, headers={"Content-Type": content_type})
        assert r.status_code == 415, r.text
        err = r.json()["error"]
        assert err["code"] == "unsupported_media_type" and err["field"] == "Content-Type"
        assert "application/json" in err["message"] and content_type.split(";")[0] in err["message"]
    # JSON types with parameters or a +json suffix are JSON
    for declared in ("application/json; charset=utf-8", "application/vnd.harmonia+json"):
        r = small.post(
            "/v1/jobs", content=b'{"model": "noop", "payload": {}}', headers={"Content-Type": declared}
        )
        assert r.status_code == 202, (declared, r.text)


def _unbounded(schema: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    if "$ref" in schema:
        schema = defs[schema["$ref"].split("/")[-1]]
    found: list[str] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            found += _unbounded(sub, defs, path)
    kind = schema.get("type")
    if kind == "string" and not {"maxLength", "enum", "const", "pattern"} & set(schema):
        found.append(path)
    if kind == "array":
        if "maxItems" not in schema:
            found.append(path + "[]")
        found += _unbounded(schema.get("items", {}), defs, path + "[]")
    for name, sub in schema.get("properties", {}).items():
        found += _unbounded(sub, defs, f"{path}.{name}")
    return found


def test_every_payload_string_and_list_declares_a_bound(settings: Settings) -> None:
    settings.musicgen_url = settings.diffsinger_url = "http://127.0.0.1:9"  # schemas, not engines
    registry = Registry(settings)
    unbounded = []
    for name, spec in registry.specs.items():
        schema = spec.schema().model_json_schema()
        unbounded += _unbounded(schema, schema.get("$defs", {}), name)
    print("\nunbounded payload fields:", unbounded)
    assert unbounded == []


def test_rate_limit_is_shared_by_gateway_replicas(settings: Settings) -> None:
    settings.api_keys = [SecretStr("key-a")]
    settings.rate_limit = "4/minute"
    auth = {"Authorization": "Bearer key-a"}
    body = {"model": "noop", "payload": {}}
    with ServerThread(make_gateway(settings)) as one, ServerThread(make_gateway(settings)) as two:
        codes = [
            httpx.post(gw.url + "/v1/jobs", json=body, headers=auth).status_code for gw in (one, two) * 3
        ]
        r = httpx.post(two.url + "/job", json=body, headers=auth)
    assert codes == [202, 202, 202, 202, 429, 429]
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.json()["error"]["code"] == "rate_limited"
