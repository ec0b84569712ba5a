"""A model service that answers 500, drops connections or hangs, behind `musicgen` jobs (the
worker's RemoteEngine forwards them to HARMONIA_MUSICGEN_URL): jobs retry per policy and then fail
with the reason, time limits are enforced, and no worker thread stays stuck."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from bad_service import BadService
from fault_cluster import Cluster, Proc, attempts, state_events, submit_all, wait_finished

from harmonia.jobs.keys import events_key
from helpers import wait_for

pytestmark = pytest.mark.slow

MAX_RETRIES = 2  # so a retryable failure makes 3 attempts


def run_time_s(r: redis.Redis, job_id: str) -> float:
    entries = r.xrange(events_key(job_id))
    ms = {
        json.loads(f[b"data"])["status"]: int(eid.split(b"-")[0])
        for eid, f in entries
        if f[b"event"] == b"state"
    }
    return (ms["failed"] - ms["running"]) / 1000


def musicgen(text: str, **kw: Any) -> dict[str, Any]:
    return {"model": "musicgen", "payload": {"text": text, "duration_s": 1}, **kw}


@pytest.fixture
def service() -> Iterator[BadService]:
    with BadService() as svc:
        yield svc


@pytest.fixture
def remote(cluster: Cluster, service: BadService) -> tuple[str, Proc]:
    env = {"HARMONIA_MUSICGEN_URL": service.url, "HARMONIA_MAX_RETRIES": str(MAX_RETRIES)}
    cluster.env.update(env)
    _, url = cluster.gateway()
    worker = cluster.worker("--queues", "musicgen,noop", "--threads", "2")
    return url, worker


def test_retryable_failures_retry_per_policy_then_fail_with_reason(
    remote: tuple[str, Proc], service: BadService, rclient: redis.Redis
) -> None:
    url, _ = remote
    answers = submit_all(url, [musicgen("500"), musicgen("drop"), musicgen("flaky-2")])
    assert [a.status for a in answers] == [202, 202, 202], answers
    ids = [a.body["id"] for a in answers]
    states = wait_finished(rclient, ids, timeout=60)
    with httpx.Client(base_url=url) as http:
        failed_500, dropped, flaky = (http.get(f"/v1/jobs/{i}").json() for i in ids)
    assert states[ids[0]] == states[ids[1]] == "failed" and states[ids[2]] == "succeeded"
    for job, reason in ((failed_500, "answered 500: model exploded"), (dropped, "unreachable")):
        err = job["error"]
        assert reason in err["message"] and f"gave up after {MAX_RETRIES + 1} attempts" in err["message"]
        assert err["retryable"] is True and job["attempts"] == MAX_RETRIES + 1
    assert service.requests["500"] == service.requests["drop"] == MAX_RETRIES + 1
    assert flaky["result"]["answered"] == "flaky-2" and flaky["attempts"] == 3
    retries = state_events(rclient, ids)
    assert retries[ids[0]] == ["queued", "running", "queued", "running", "queued", "running", "failed"]


def test_hanging_service_times_out_and_frees_worker_threads(
    remote: tuple[str, Proc], service: BadService, rclient: redis.Redis
) -> None:
    url, _ = remote
    started = time.monotonic()
    # twice as many hanging jobs as worker threads: the later ones run only if the earlier ones
    # gave their threads back at their time limit
    answers = submit_all(url, [musicgen("hang", timeout_s=1.0) for _ in range(4)])
    ids = [a.body["id"] for a in answers]
    states = wait_finished(rclient, ids, timeout=30)
    took = time.monotonic() - started
    assert set(states.values()) == {"failed"}
    with httpx.Client(base_url=url) as http:
        jobs = [http.get(f"/v1/jobs/{i}").json() for i in ids]
        for job in jobs:
            assert job["error"]["code"] == "timeout" and "1 s" in job["error"]["message"]
        # from the `running` event to the `failed` one (stream ids are server milliseconds)
        ran = [run_time_s(rclient, i) for i in ids]
        assert max(ran) < 2.5, ran
        assert set(attempts(rclient, ids).values()) == {1}  # a timeout is final, not retried
        ok = http.post("/v1/jobs", json={"model": "noop", "payload": {"note": "after"}}).json()
        wait_for(lambda: http.get(f"/v1/jobs/{ok['id']}").json()["status"] == "succeeded", timeout=10)
    print(f"\n4 hanging jobs (timeout 1 s, 2 threads) all failed after {took:.1f} s; each ran {ran} s")


def test_timed_out_request_is_abandoned_not_left_open(
    remote: tuple[str, Proc], service: BadService, rclient: redis.Redis
) -> None:
    url, worker = remote
    warm = submit_all(url, [musicgen("flaky-0")])  # loads the engine; its threads settle
    wait_finished(rclient, [warm[0].body["id"]], timeout=30)
    time.sleep(0.5)
    baseline = worker.threads()
    ids = [a.body["id"] for a in submit_all(url, [musicgen("hang", timeout_s=0.5) for _ in range(3)])]
    wait_finished(rclient, ids, timeout=30)
    finished = time.monotonic()
    try:
        wait_for(lambda: service.hung_open == 0 and len(service.hung_closed) == 3, timeout=5)
    finally:
        print(
            f"\nthreads in the worker: {baseline} before, {worker.threads()} after 3 timed-out jobs; "
            f"service connections still open: {service.hung_open}, closed by the client: "
            f"{[round(t - finished, 2) for t in service.hung_closed]} s after the jobs failed"
        )
    assert worker.threads() <= baseline
