"""The gateway API through a real uvicorn server, a real Valkey and an in-process worker."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from harmonia.config import Settings
from helpers import ServerThread, make_gateway, wait_for


def submit(http: httpx.Client, payload: dict[str, Any], model: str = "noop", **kw: Any) -> httpx.Response:
    return http.post(
        "/v1/jobs", json={"model": model, "payload": payload, **kw}, headers=kw.pop("headers", None)
    )


def wait_status(http: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job = http.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    return wait_for(finished, timeout)


def sse(
    http: httpx.Client, job_id: str, last_event_id: str | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[tuple[str, str, dict[str, Any]]] = []
    current: dict[str, str] = {}
    with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "data" in current:
                    events.append((current["id"], current["event"], json.loads(current["data"])))
                current = {}
                continue
            key, _, value = line.partition(": ")
            current[key] = value
    return events


@pytest.mark.usefixtures("worker")
def test_original_call_shape_works_verbatim(http: httpx.Client) -> None:
    r = http.post(
        "/job",
        headers={"Content-Type": "application/json"},
        content=b'{"model":"noop","mode":"async","payload":{"note":"hi"}}',
    )
    assert r.status_code == 202
    body = r.json()
    assert body["job_id"] == body["id"] and body["status"] == "queued"
    assert r.headers["location"] == f"/v1/jobs/{body['id']}"
    done = wait_status(http, body["id"])
    legacy = http.get(f"/job/{body['id']}").json()
    assert legacy["status"] == done["status"] == "succeeded"
    assert legacy["result"] == {"note": "hi", "steps": 1}


@pytest.mark.usefixtures("worker")
def test_sse_progress_and_last_event_id_replay(http: httpx.Client) -> None:
    job = submit(http, {"sleep_s": 0.6, "steps": 3}).json()
    events = sse(http, job["id"])
    kinds = [(e, d.get("status")) for _, e, d in events]
    assert kinds[0] == ("state", "queued") and ("state", "running") in kinds
    assert kinds[-1] == ("state", "succeeded")
    fractions = [d["fraction"] for _, e, d in events if e == "progress"]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    replay = sse(http, job["id"], last_event_id=events[1][0])
    assert [e[0] for e in replay] == [e[0] for e in events[2:]]
    r = http.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "garbage"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "Last-Event-ID"


@pytest.mark.usefixtures("worker")
def test_sync_mode_returns_result_or_202(http: httpx.Client, settings: Settings) -> None:
    r = submit(http, {"note": "now"}, mode="sync")
    assert r.status_code == 200 and r.json()["status"] == "succeeded" and r.json()["result"]["note"] == "now"
    settings.sync_timeout_s = 0.3  # the app holds this same settings object
    r = submit(http, {"sleep_s": 1.5, "steps": 3}, mode="sync")
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running")
    assert wait_status(http, r.json()["id"])["status"] == "succeeded"  # nothing lost past the wait


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"model": "nope", "mode": "async", "payload": {}}, 422, "model"),
        ({"model": "noop", "mode": "later", "payload": {}}, 422, "mode"),
        ({"model": "noop", "mode": "async"}, 422, "payload"),
        ({"model": "noop", "payload": {"sleep_s": -1}}, 422, "payload.sleep_s"),
        ({"model": "noop", "payload": {"surprise": 1}}, 422, "payload.surprise"),
        ({"model": "noop", "payload": {}, "timeout_s": 10**9}, 422, "timeout_s"),
        ({"model": "noop", "payload": {}, "webhook_url": "ftp://x"}, 422, "webhook_url"),
        ({"model": "noop", "payload": "text"}, 422, "payload"),
        ([1, 2], 422, "body"),
    ],
)
def test_bad_input_is_a_clear_4xx(http: httpx.Client, body: Any, status: int, field: str) -> None:
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and err["message"] and err["code"] == "invalid_input"


def test_payload_aliases_are_stored_under_the_field_names(http: httpx.Client) -> None:
    """jen1 and musicgen take `duration` for `duration_s` (and musicgen the other names audiocraft
    and hosted APIs use); the queued payload holds the schema's own names, so a worker or a remote
    model service reads one spelling."""
    r = submit(http, {"instructions": "render violin", "duration": 5}, model="jen1")
    assert r.status_code == 202, r.text
    assert r.json()["payload"] == {"instructions": "render violin", "duration_s": 5.0}
    r = submit(http, {"prompt": "jazz", "duration": 2, "output_format": "flac"}, model="musicgen")
    assert r.status_code == 202, r.text
    assert r.json()["payload"] == {"text": "jazz", "duration_s": 2.0, "format": "flac"}
    r = submit(http, {"instructions": "render violin", "duration": 5, "duration_s": 6}, model="jen1")
    assert r.status_code == 422 and r.json()["error"]["field"] == "payload.duration_s"
    assert "duration_s and duration" in r.json()["error"]["message"]
    r = submit(http, {"text": "jazz", "length": 2}, model="musicgen")
    assert r.status_code == 422 and r.json()["error"]["field"] == "payload.length"


def test_body_limit_and_malformed_json(http: httpx.Client) -> None:
    big = {"model": "noop", "payload": {"note": "x" * 2_000_000}}
    r = http.post("/v1/jobs", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    r = http.post("/job", content=b'{"model": "noop",', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_json"


def test_cancel_queued_job_never_runs(http: httpx.Client, settings: Settings) -> None:
    from harmonia.redis_client import connect
    from harmonia.worker import WorkerProcess

    job = submit(http, {"note": "never"}).json()  # no worker is running yet
    r = http.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    proc = WorkerProcess(settings, connect(settings.redis_url or ""))
    proc.start()
    try:
        after = submit(http, {"note": "after"}).json()
        assert wait_status(http, after["id"])["status"] == "succeeded"
        final = http.get(f"/v1/jobs/{job['id']}").json()
        assert final["status"] == "canceled" and final["attempts"] == 0 and final["result"] is None
    finally:
        proc.stop()


@pytest.mark.usefixtures("worker")
def test_cancel_running_job_stops_at_next_check(http: httpx.Client) -> None:
    job = submit(http, {"sleep_s": 20, "steps": 200}).json()
    wait_for(lambda: http.get(f"/v1/jobs/{job['id']}").json()["status"] == "running")
    started = time.monotonic()
    r = http.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202
    final = wait_status(http, job["id"], timeout=10)
    assert final["status"] == "canceled" and time.monotonic() - started < 5
    r = http.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200  # canceling a canceled job again is fine
    done = submit(http, {}, mode="sync").json()
    r = http.post(f"/v1/jobs/{done['id']}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


@pytest.mark.usefixtures("worker")
def test_idempotency_key(http: httpx.Client) -> None:
    h = {"Idempotency-Key": "order-42"}
    a = http.post("/v1/jobs", json={"model": "noop", "payload": {"note": "a"}}, headers=h)
    b = http.post("/v1/jobs", json={"model": "noop", "payload": {"note": "a"}}, headers=h)
    assert a.status_code == b.status_code == 202 and a.json()["id"] == b.json()["id"]
    c = http.post("/v1/jobs", json={"model": "noop", "payload": {"note": "different"}}, headers=h)
    assert c.status_code == 409
    listed = http.get("/v1/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [a.json()["id"]]


@pytest.mark.usefixtures("worker")
def test_timeout_fails_job_with_reason(http: httpx.Client) -> None:
    job = submit(http, {"sleep_s": 30, "steps": 300}, timeout_s=0.5).json()
    final = wait_status(http, job["id"], timeout=15)
    assert final["status"] == "failed" and final["error"]["code"] == "timeout"
    assert "0.5 s" in final["error"]["message"]


@pytest.mark.usefixtures("worker")
def test_engine_error_fails_job_and_worker_keeps_serving(http: httpx.Client) -> None:
    bad = submit(http, {"fail": "error"}).json()
    assert wait_status(http, bad["id"])["error"]["message"] == "noop asked to fail"
    good = submit(http, {"note": "still here"}).json()
    assert wait_status(http, good["id"])["status"] == "succeeded"


@pytest.mark.usefixtures("worker")
def test_retryable_errors_retry_with_backoff_then_dead_letter(http: httpx.Client, settings: Settings) -> None:
    from harmonia.redis_client import connect

    job = submit(http, {"fail": "retryable"}).json()
    final = wait_status(http, job["id"], timeout=30)
    assert final["status"] == "failed" and final["attempts"] == settings.max_retries + 1
    assert "gave up after 4 attempts" in final["error"]["message"] and final["error"]["retryable"]
    wait_for(lambda: connect(settings.redis_url or "").zcard("dramatiq:noop.XQ") == 1)
    requeued = [d for _, e, d in sse(http, job["id"]) if e == "state" and d["status"] == "queued"]
    assert [d.get("retry") for d in requeued] == [None, 1, 2, 3]


@pytest.mark.usefixtures("worker")
def test_list_filters_and_cursor(http: httpx.Client) -> None:
    ids = [submit(http, {"note": str(i)}, mode="sync").json()["id"] for i in range(5)]
    failed = submit(http, {"fail": "error"}, mode="sync").json()["id"]
    page1 = http.get("/v1/jobs", params={"limit": 4}).json()
    page2 = http.get("/v1/jobs", params={"limit": 4, "cursor": page1["next_cursor"]}).json()
    assert [j["id"] for j in page1["jobs"] + page2["jobs"]] == [failed, *ids[::-1]]
    assert page2["next_cursor"] is None
    only_failed = http.get("/v1/jobs", params={"status": "failed"}).json()["jobs"]
    assert [j["id"] for j in only_failed] == [failed]
    assert http.get("/v1/jobs", params={"status": "bogus"}).status_code == 422


@pytest.mark.usefixtures("worker")
def test_artifacts_download_and_names_cannot_escape(http: httpx.Client) -> None:
    job = submit(http, {"note": "file", "artifact": True}, mode="sync").json()
    assert [a["name"] for a in job["artifacts"]] == ["echo.json"]
    r = http.get(job["artifacts"][0]["url"])
    assert r.status_code == 200 and r.json()["note"] == "file"
    base = f"/v1/jobs/{job['id']}/artifacts/"
    for name in ("..%2F..%2Fvalkey%2Fvalkey.secret", "%2Fetc%2Fpasswd", "%2E%2E", ".hidden", "missing.wav"):
        r = http.get(base + name)
        assert r.status_code in (404, 422), (name, r.status_code)
        assert "error" in r.json()


def test_models_health_ready_metrics(http: httpx.Client) -> None:
    models = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
    assert {"jen1", "render", "noop"} <= set(models)
    assert models["noop"]["available"] and "properties" in models["noop"]["input_schema"]
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").status_code == 200
    submit(http, {})
    text = http.get("/metrics").text
    assert 'harmonia_jobs_submitted_total{mode="async",model="noop"} 1.0' in text
    assert 'harmonia_queue_depth{queue="noop"} 1.0' in text
    assert http.get("/openapi.json").json()["paths"]["/v1/jobs"]


def test_api_keys_isolate_owners(settings: Settings) -> None:
    import hashlib

    from pydantic import SecretStr

    settings.api_keys = [SecretStr("key-a"), SecretStr("sha256:" + hashlib.sha256(b"key-b").hexdigest())]
    with ServerThread(make_gateway(settings)) as gw:
        a = httpx.Client(base_url=gw.url, headers={"Authorization": "Bearer key-a"})
        b = httpx.Client(base_url=gw.url, headers={"Authorization": "Bearer key-b"})
        anon = httpx.Client(base_url=gw.url)
        assert anon.post("/v1/jobs", json={"model": "noop", "payload": {}}).status_code == 401
        assert httpx.get(gw.url + "/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
        job = a.post("/v1/jobs", json={"model": "noop", "payload": {}}).json()
        base = f"/v1/jobs/{job['id']}"
        for method, path in [
            ("GET", base),
            ("GET", base + "/events"),
            ("GET", base + "/artifacts/x.wav"),
            ("POST", base + "/cancel"),
            ("GET", f"/job/{job['id']}"),
        ]:
            r = b.request(method, path)
            assert r.status_code == 404, (method, path, r.status_code)
        assert b.get("/v1/jobs").json()["jobs"] == []
        assert [j["id"] for j in a.get("/v1/jobs").json()["jobs"]] == [job["id"]]
        assert a.get(base).status_code == 200


def test_redis_down_gives_503_not_a_hang(settings: Settings) -> None:
    from helpers import free_port

    settings.redis_url = f"redis://127.0.0.1:{free_port()}/0"
    with ServerThread(make_gateway(settings)) as gw:
        with httpx.Client(base_url=gw.url, timeout=15) as http:
            started = time.monotonic()
            r = http.get("/readyz")
            assert r.status_code == 503 and "redis" in r.json()["error"]["message"]
            r = submit(http, {})
            assert r.status_code == 503 and r.json()["error"]["code"] == "dependency_down"
            assert http.get("/healthz").status_code == 200
            assert time.monotonic() - started < 10


@pytest.mark.usefixtures("worker")
def test_concurrent_sync_requests(http: httpx.Client) -> None:
    results: list[int] = []

    def one() -> None:
        results.append(submit(http, {"sleep_s": 0.05}, mode="sync").status_code)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 20


def test_rate_limit_per_key_answers_429_with_retry_after(settings: Settings) -> None:
    from pydantic import SecretStr

    settings.api_keys = [SecretStr("key-a"), SecretStr("key-b")]
    settings.rate_limit = "3/minute"
    with ServerThread(make_gateway(settings)) as gw:
        a = httpx.Client(base_url=gw.url, headers={"Authorization": "Bearer key-a"})
        b = httpx.Client(base_url=gw.url, headers={"Authorization": "Bearer key-b"})
        codes = [a.post("/v1/jobs", json={"model": "noop", "payload": {}}).status_code for _ in range(4)]
        assert codes == [202, 202, 202, 429]
        r = a.post("/job", json={"model": "noop", "payload": {}})
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
        assert r.json()["error"]["code"] == "rate_limited"
        assert b.post("/v1/jobs", json={"model": "noop", "payload": {}}).status_code == 202  # per key
        assert a.get("/v1/jobs").status_code == 200  # reads are not limited
