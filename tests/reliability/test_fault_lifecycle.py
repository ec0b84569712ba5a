"""Every job runs once and nothing waits on a dead worker, on one host with real processes:

- a sync job that runs far longer than the lease and the heartbeat timeout is run once, by one
  worker, and its caller gets that run;
- the messages a SIGKILLed worker had prefetched (not yet running) are redelivered within
  `heartbeat_timeout + lease` of its death by the live workers' reapers, without Dramatiq's
  random maintenance, and a busy live worker's messages are never taken.

The short heartbeat and lease these tests set (named in each) only shorten the waits; the
mechanism is the one that runs with the defaults.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from bad_service import BadService
from fault_cluster import Cluster, attempts, running_pids, state_events, statuses, submit_all, wait_finished

from harmonia.config import Settings
from helpers import short_recovery, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def service() -> Iterator[BadService]:
    with BadService() as svc:
        yield svc


def test_a_sync_job_longer_than_lease_and_heartbeat_runs_once(
    cluster: Cluster, service: BadService, settings: Settings, rclient: redis.Redis
) -> None:
    short_recovery(settings)  # a 2 s lease and a 3 s heartbeat: the 25 s run outlasts both many times
    settings.sync_timeout_s = 60  # the caller waits for the whole run
    cluster.env["HARMONIA_MUSICGEN_URL"] = service.url
    _, url = cluster.gateway()
    # two workers: either one's reaper could take the job over if its runner looked dead
    cluster.worker("--queues", "musicgen")
    cluster.worker("--queues", "musicgen")
    body = {"model": "musicgen", "mode": "sync", "payload": {"text": "slow-25", "duration_s": 1}}
    started = time.monotonic()
    r = httpx.post(url + "/v1/jobs", json=body, timeout=90)
    waited = time.monotonic() - started
    job = r.json()
    print(f"\n25 s sync job: answered {r.status_code} after {waited:.1f} s, attempts {job['attempts']}")
    assert r.status_code == 200 and job["status"] == "succeeded", job
    assert job["attempts"] == 1 and job["result"]["answered"] == "slow-25"
    assert service.requests["slow-25"] == 1  # the model service was called once
    assert 25 <= waited < 33
    assert state_events(rclient, [job["id"]])[job["id"]] == ["queued", "running", "succeeded"]


def test_a_dead_workers_prefetched_jobs_are_redelivered_in_bounded_time(
    cluster: Cluster, settings: Settings, rclient: redis.Redis
) -> None:
    short_recovery(settings)  # recovery bound heartbeat 3 s + lease 2 s (defaults: 60 s + 30 s)
    _, url = cluster.gateway()
    # one thread, so the worker holds one running job and prefetches the next (prefetch = 2)
    doomed = cluster.worker("--queues", "noop", "--threads", "1")
    answers = submit_all(url, [{"model": "noop", "payload": {"sleep_s": 3.0}} for _ in range(3)])
    ids = [a.body["id"] for a in answers]
    wait_for(lambda: doomed.pid in running_pids(rclient), timeout=60)
    acks = {k.decode(): rclient.scard(k) for k in rclient.keys("dramatiq:__acks__.*.noop")}
    assert sum(acks.values()) == 2, acks  # one running, one prefetched
    doomed.kill()  # never restarted
    killed = time.monotonic()
    survivor = cluster.worker("--queues", "noop", "--threads", "1")
    # a live, busy worker: its own heartbeat must keep its messages where they are
    states = wait_finished(rclient, ids, timeout=3 + 2 + 30 + 3 * 3.0)
    took = time.monotonic() - killed
    tries = attempts(rclient, ids)
    print(f"\nworker SIGKILLed; all 3 jobs done {took:.1f} s later; attempts {sorted(tries.values())}")
    assert set(states.values()) == {"succeeded"}
    assert sorted(tries.values()) == [1, 1, 2]  # the running one ran again; the others once
    assert all(ev.count("succeeded") == 1 for ev in state_events(rclient, ids).values())
    assert survivor.popen.poll() is None


def test_a_busy_live_worker_keeps_its_messages(
    cluster: Cluster, settings: Settings, rclient: redis.Redis
) -> None:
    short_recovery(settings)  # a 3 s heartbeat: the jobs below run for three times as long
    _, url = cluster.gateway()
    cluster.worker("--queues", "noop", "--threads", "1")  # one running + one prefetched
    cluster.worker("--queues", "noop", "--threads", "1")  # another live reaper looking on
    answers = submit_all(url, [{"model": "noop", "payload": {"sleep_s": 9.0, "steps": 9}} for _ in range(4)])
    ids = [a.body["id"] for a in answers]
    wait_finished(rclient, ids, timeout=60)
    assert set(statuses(rclient, ids).values()) == {"succeeded"}
    assert set(attempts(rclient, ids).values()) == {1}  # no live worker's job was taken over
