"""JobStore on a real Valkey: creation, idempotency, checked transitions, leases, cancel, paging."""

from __future__ import annotations

import time

import pytest

from harmonia.errors import Conflict, InvalidInput, NotFound
from harmonia.jobs.models import Job, JobState
from harmonia.jobs.store import JobStore, new_job_id
from harmonia.redis_client import connect


@pytest.fixture
def store(redis_url: str) -> JobStore:
    return JobStore(connect(redis_url), result_ttl_s=60, lease_s=5)


def make_job(owner: str = "alice", model: str = "noop", **kw: object) -> Job:
    return Job(id=new_job_id(), model=model, queue=model, owner=owner, payload={"x": 1}, timeout_s=10, **kw)


def test_create_and_get_roundtrip(store: JobStore) -> None:
    job, created = store.create(make_job())
    assert created
    got = store.get(job.id)
    assert got is not None
    assert got.model_dump() == job.model_dump()
    assert [e.data["status"] for e in store.events(job.id)] == ["queued"]


def test_idempotency_key_returns_same_job_per_owner(store: JobStore) -> None:
    first, created1 = store.create(make_job(), "key-1", "hash-a")
    again, created2 = store.create(make_job(), "key-1", "hash-a")
    assert created1 and not created2
    assert again.id == first.id
    other_owner, created3 = store.create(make_job(owner="bob"), "key-1", "hash-a")
    assert created3 and other_owner.id != first.id
    with pytest.raises(Conflict):
        store.create(make_job(), "key-1", "hash-b")


def test_get_for_hides_other_owners_jobs(store: JobStore) -> None:
    job, _ = store.create(make_job(owner="alice"))
    assert store.get_for(job.id, "alice").id == job.id
    with pytest.raises(NotFound):
        store.get_for(job.id, "bob")
    with pytest.raises(NotFound):
        store.get_for("../../etc", "alice")


def test_claim_run_succeed_and_finished_never_changes(store: JobStore) -> None:
    job, _ = store.create(make_job())
    outcome, claim, attempt = store.claim(job.id)
    assert (outcome, attempt) == ("claimed", 1)
    assert store.beat(job.id, claim, {"fraction": 0.5, "message": "half"}) == "ok"
    assert (
        store.transition(job.id, JobState.succeeded, claim=claim, fields={"result": {"ok": True}})[0] == "ok"
    )
    done = store.get(job.id)
    assert done is not None and done.status == JobState.succeeded and done.result == {"ok": True}
    assert done.finished_at is not None and done.progress.fraction == 0.5
    assert done.started_at is not None and done.created_at <= done.started_at <= done.finished_at
    for target in JobState:
        assert store.transition(job.id, target, fields={"result": {"ok": False}})[0] == "refused"
    assert store.claim(job.id)[0] == "finished"
    assert store.cancel(job.id) == "finished"
    ttl = store.r.pttl(f"harmonia:job:{job.id}")
    assert 0 < ttl <= 60_000


def test_live_lease_blocks_second_claim_and_stale_claim_cannot_finish(store: JobStore) -> None:
    job, _ = store.create(make_job())
    _, first, _ = store.claim(job.id)
    outcome, _, wait_ms = store.claim(job.id)
    assert outcome == "leased" and 0 < wait_ms <= 5000
    # the first worker "dies": its lease lapses, and the redelivered message takes over
    store.r.hset(f"harmonia:job:{job.id}", "lease_until", 0)
    outcome, second, attempt = store.claim(job.id)
    assert (outcome, attempt) == ("claimed", 2)
    assert store.beat(job.id, first) == "lost"
    assert store.transition(job.id, JobState.succeeded, claim=first)[0] == "stale"
    assert store.transition(job.id, JobState.succeeded, claim=second)[0] == "ok"
    events = [e.data.get("status") for e in store.events(job.id) if e.event == "state"]
    assert events == ["queued", "running", "running", "succeeded"]


def test_cancel_queued_and_running(store: JobStore) -> None:
    queued, _ = store.create(make_job())
    assert store.cancel(queued.id) == "canceled"
    assert store.claim(queued.id)[0] == "finished"
    running, _ = store.create(make_job())
    _, claim, _ = store.claim(running.id)
    assert store.cancel(running.id) == "requested"
    assert store.beat(running.id, claim) == "cancel"
    assert store.transition(running.id, JobState.canceled, claim=claim)[0] == "ok"


def test_retry_requeues_with_attempts_kept(store: JobStore) -> None:
    job, _ = store.create(make_job())
    _, claim, _ = store.claim(job.id)
    assert (
        store.transition(
            job.id, JobState.queued, claim=claim, fields={"error": {"code": "x", "message": "m"}}
        )[0]
        == "ok"
    )
    outcome, _, attempt = store.claim(job.id)
    assert (outcome, attempt) == ("claimed", 2)


def test_list_pages_newest_first_with_filters(store: JobStore) -> None:
    ids = []
    for i in range(7):
        job, _ = store.create(make_job(model="noop" if i % 2 else "render"))
        ids.append(job.id)
        time.sleep(0.002)
    store.create(make_job(owner="bob"))
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = store.list("alice", limit=3, cursor=cursor)
        seen += [j.id for j in page]
        if cursor is None:
            break
    assert seen == ids[::-1]
    renders, _ = store.list("alice", model="render", limit=10)
    assert [j.id for j in renders] == [ids[i] for i in (6, 4, 2, 0)]
    queued, _ = store.list("alice", status=JobState.queued, limit=100)
    assert len(queued) == 7
    with pytest.raises(InvalidInput):
        store.list("alice", cursor="not-a-cursor")


def test_orphaned_running_jobs_are_found_once(store: JobStore) -> None:
    job, _ = store.create(make_job())
    _, claim, _ = store.claim(job.id)
    assert store.orphans(grace_ms=1000) == []  # its lease is live
    store.r.zadd("harmonia:running", {job.id: 0})  # its worker vanished long ago
    assert store.orphans(grace_ms=1000) == [job.id]
    assert store.orphans(grace_ms=1000) == []  # pushed forward: concurrent reapers don't all pick it
    store.transition(job.id, JobState.succeeded, claim=claim)
    assert store.r.zscore("harmonia:running", job.id) is None
