"""A backlog of queued no-op jobs drained by two worker processes: zero lost, each recorded once,
nothing dead-lettered, and the RSS of the gateway and the workers stays bounded (sampled with
psutil while they work)."""

from __future__ import annotations

import time

import pytest
import redis
from fault_cluster import (
    Cluster,
    RssSampler,
    broker_report,
    dead_letters,
    queue_depth,
    sized,
    state_events,
    statuses,
    submit_all,
    wait_finished,
)

from harmonia.jobs.keys import events_key, job_key
from helpers import wait_for

pytestmark = pytest.mark.slow

MB = 1024 * 1024
# RSS growth allowed between the first quarter of the work and its end. Python processes grow a
# little as allocator arenas fill; a leak per job would grow with the job count, so the bound is a
# fixed allowance plus a per-job allowance far below any per-job record size (~1 KiB).
FIXED_MB = 40
PER_JOB_KB = 2


def _growth(samples: list[tuple[float, int]], after: float) -> float:
    """MB from the first sample at or after `after` (warmed up) to the largest later sample."""
    later = [rss for t, rss in samples if t >= after] or [samples[-1][1]]
    return (max(later) - later[0]) / MB


def test_drain_backlog_loses_nothing_and_memory_stays_bounded(cluster: Cluster, rclient: redis.Redis) -> None:
    n = sized(1000, 10_000)
    bound_mb = FIXED_MB + n * PER_JOB_KB / 1024
    gateway, url = cluster.gateway()
    bodies = [{"model": "noop", "payload": {"note": f"n{i}"}} for i in range(n)]
    with RssSampler({"gateway": gateway}) as gw_rss:
        started = time.monotonic()
        answers = submit_all(url, bodies, concurrency=8)
        submit_s = time.monotonic() - started
    assert [a.status for a in answers].count(202) == n, [a for a in answers if a.status != 202][:3]
    ids = [a.body["id"] for a in answers]
    assert queue_depth(rclient, "noop") == n

    workers = [cluster.worker("--queues", "noop"), cluster.worker("--queues", "noop")]
    with RssSampler({"w0": workers[0], "w1": workers[1]}) as w_rss:
        started = time.monotonic()
        # warmed up: both workers have imported everything and run jobs for a while
        wait_for(lambda: list(statuses(rclient, ids).values()).count("succeeded") >= n // 5, timeout=60)
        warm_at = time.monotonic() - started
        try:
            states = wait_finished(rclient, ids, timeout=sized(60, 900))
        except AssertionError:
            pending = [i for i, s in statuses(rclient, ids).items() if s != "succeeded"]
            print(broker_report(rclient, pending))
            for i in pending[:3]:
                print(i, rclient.hgetall(job_key(i)), rclient.xrange(events_key(i)))
            for proc in cluster.procs:
                print(proc.name, proc.pid, proc.output()[-3000:])
            raise
        drain_s = time.monotonic() - started
    assert set(states.values()) == {"succeeded"}
    assert all(ev.count("succeeded") == 1 for ev in state_events(rclient, ids).values())
    assert queue_depth(rclient, "noop") == 0 and dead_letters(rclient, "noop") == 0

    # the gateway is warm after its first submissions; the workers once a fifth of the jobs ran
    growth = {"gateway": _growth(gw_rss.samples["gateway"], after=1.0)}
    growth.update({w: _growth(w_rss.samples[w], after=warm_at) for w in ("w0", "w1")})
    peak = {
        "gateway": max(gw_rss.values("gateway")) / MB,
        **{w: max(w_rss.values(w)) / MB for w in ("w0", "w1")},
    }
    print(
        f"\n{n} jobs: submitted in {submit_s:.1f} s ({n / submit_s:.0f}/s), drained in {drain_s:.1f} s "
        f"({n / drain_s:.0f}/s, includes worker start-up); RSS growth MB "
        f"{ {k: round(v, 1) for k, v in growth.items()} }, "
        f"peak MB { {k: round(v) for k, v in peak.items()} }, bound {bound_mb:.0f} MB"
    )
    for name, mb in growth.items():
        assert mb < bound_mb, (name, mb)
