"""Graceful shutdown (SIGTERM) of a busy worker: its running jobs finish (or, past the shutdown
limit, are redelivered), its prefetched jobs go back to the queue, and no job is lost or recorded
twice. Also: the job record's timestamps."""

from __future__ import annotations

import time

import httpx
import pytest
import redis
from fault_cluster import Cluster, attempts, state_events, statuses, submit_all, wait_finished

from harmonia.config import Settings
from helpers import short_recovery, wait_for

pytestmark = pytest.mark.slow


def _running(r: redis.Redis, ids: list[str]) -> list[str]:
    return [i for i, s in statuses(r, ids).items() if s == "running"]


def test_sigterm_lets_running_jobs_finish_and_returns_the_rest(
    cluster: Cluster, rclient: redis.Redis
) -> None:
    _, url = cluster.gateway()
    bodies = [{"model": "noop", "payload": {"sleep_s": 1.5, "steps": 10, "note": str(i)}} for i in range(6)]
    ids = [a.body["id"] for a in submit_all(url, bodies)]
    first = cluster.worker("--queues", "noop", "--threads", "2")
    running = wait_for(lambda: len(r := _running(rclient, ids)) == 2 and r, timeout=30)
    time.sleep(0.3)  # well inside the jobs
    stopped = time.monotonic()
    assert first.terminate(timeout=30) == 0, first.output()
    took = time.monotonic() - stopped
    after_stop = statuses(rclient, ids)
    print(f"\nworker stopped {took:.1f} s after SIGTERM; states then: {sorted(after_stop.values())}")
    assert all(after_stop[i] == "succeeded" for i in running), after_stop  # finished, not abandoned
    assert sorted(after_stop.values()).count("queued") == 4  # the rest went back, none half-run
    second = cluster.worker("--queues", "noop")
    wait_finished(rclient, ids, timeout=60)
    assert set(statuses(rclient, ids).values()) == {"succeeded"}
    assert set(attempts(rclient, ids).values()) == {1}  # nothing ran twice
    assert all(ev.count("succeeded") == 1 for ev in state_events(rclient, ids).values())
    assert second.terminate() == 0


def test_sigterm_past_shutdown_limit_requeues_the_running_job(
    cluster: Cluster, rclient: redis.Redis, settings: Settings
) -> None:
    short_recovery(settings)  # the abandoned job is redelivered within seconds, not 90 s
    _, url = cluster.gateway()
    [answer] = submit_all(url, [{"model": "noop", "payload": {"sleep_s": 4.0, "steps": 40}}])
    job_id = answer.body["id"]
    first = cluster.worker("--queues", "noop", HARMONIA_SHUTDOWN_TIMEOUT_S="0.5")
    wait_for(lambda: _running(rclient, [job_id]), timeout=30)
    time.sleep(0.5)
    stopped = time.monotonic()
    first.terminate(timeout=30)
    took = time.monotonic() - stopped
    assert statuses(rclient, [job_id])[job_id] == "running"  # abandoned mid-run, lease still held
    cluster.worker("--queues", "noop")
    wait_finished(rclient, [job_id], timeout=60)
    with httpx.Client(base_url=url) as http:
        job = http.get(f"/v1/jobs/{job_id}").json()
    print(f"\nworker left after {took:.1f} s; job redelivered, attempts {job['attempts']}")
    assert job["status"] == "succeeded" and job["attempts"] == 2
    assert state_events(rclient, [job_id])[job_id].count("succeeded") == 1


@pytest.mark.usefixtures("worker")
def test_job_record_has_started_at(http: httpx.Client) -> None:
    """Regression: started_at was never set (found by this suite, fixed in 772de18)."""
    job = http.post("/v1/jobs", json={"model": "noop", "mode": "sync", "payload": {}}).json()
    assert job["status"] == "succeeded"
    assert job["started_at"] is not None
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
