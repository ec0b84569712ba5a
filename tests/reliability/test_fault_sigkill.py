"""Jobs through a gateway and two worker processes that are SIGKILLed at random while they run:
every job ends `succeeded`, its result is recorded exactly once, its artifact reads back intact."""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest
import redis
from fault_cluster import Cluster, attempts, running_pids, sized, state_events, submit_all, wait_finished

from harmonia.config import Settings
from helpers import short_recovery

pytestmark = pytest.mark.slow


def test_jobs_survive_random_sigkills_of_workers(
    cluster: Cluster, rclient: redis.Redis, settings: Settings
) -> None:
    short_recovery(settings)  # a killed worker's jobs are taken over within seconds, not 90 s
    n_jobs, min_kills = sized(120, 500), sized(5, 10)
    _, url = cluster.gateway()
    bodies = [
        {"model": "noop", "payload": {"sleep_s": 0.2, "steps": 2, "artifact": True, "note": f"job-{i}"}}
        for i in range(n_jobs)
    ]
    answers = submit_all(url, bodies)
    assert [a.status for a in answers] == [202] * n_jobs, [a for a in answers if a.status != 202][:3]
    ids = [a.body["id"] for a in answers]

    workers = [cluster.worker("--queues", "noop"), cluster.worker("--queues", "noop")]
    rng = random.Random(8)
    kills: list[float] = []
    done = threading.Event()

    def killer() -> None:
        started = time.monotonic()
        while not done.is_set() and len(kills) < min_kills:
            if done.wait(rng.uniform(1.0, 2.0)):
                return
            slot = rng.randrange(len(workers))
            # kill a worker only once it is seen running a job, so every kill interrupts a run (on
            # a loaded machine a fresh worker may still be starting when a timer fires)
            pid = workers[slot].pid
            while pid not in running_pids(rclient):
                if done.wait(0.02):
                    return
            workers[slot].kill()
            kills.append(time.monotonic() - started)
            workers[slot] = cluster.worker("--queues", "noop")

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        # keep the jobs coming until the killer has had its minimum; then let them finish
        wait_finished(rclient, ids, timeout=sized(150, 600))
    finally:
        done.set()
        thread.join(timeout=30)

    print(f"\n{n_jobs} jobs, {len(kills)} SIGKILLs at {[round(k, 1) for k in kills]} s")
    assert len(kills) >= min_kills, f"only {len(kills)} kills happened before the jobs finished"
    states = wait_finished(rclient, ids, timeout=5)
    assert set(states.values()) == {"succeeded"}, {
        s: list(states.values()).count(s) for s in set(states.values())
    }
    events = state_events(rclient, ids)
    recorded = {i: ev.count("succeeded") for i, ev in events.items()}
    assert set(recorded.values()) == {1}, {i: ev for i, ev in events.items() if ev.count("succeeded") != 1}
    tries = attempts(rclient, ids)
    redelivered = sum(1 for t in tries.values() if t > 1)
    print(f"redelivered (attempts > 1): {redelivered}; max attempts {max(tries.values())}")
    assert redelivered >= 1, "no kill hit a running job: the test did not exercise redelivery"
    with httpx.Client(base_url=url, timeout=30) as http:
        for i, job_id in enumerate(ids):
            job = http.get(f"/v1/jobs/{job_id}").json()
            assert job["result"] == {"note": f"job-{i}", "steps": 2}
            echo = http.get(job["artifacts"][0]["url"])
            assert echo.status_code == 200 and echo.json()["note"] == f"job-{i}"
            assert int(echo.headers["content-length"]) == job["artifacts"][0]["size"]
