"""No queued job may be left without a message that carries it.

- A worker that lost its connection to Redis must not strand messages in its own ack set: the
  fetch script may have moved them there before the reply was lost, or Dramatiq may have dropped
  its prefetch cache and delay queue when it restarted the consumer. A restarted consumer puts
  every such message back on the queue and leaves alone the ones this process's threads hold.
- Whatever else loses a message (a retry whose re-enqueue failed as Redis went down, after the
  job was marked queued for it), the reaper finds queued jobs whose message is gone from the
  broker and enqueues them again; a job whose message is waiting is left alone.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import pytest

from harmonia.config import Settings
from harmonia.jobs.keys import BELL_PREFIX, QUEUED_KEY
from harmonia.jobs.models import Job, JobState
from harmonia.jobs.queue import NAMESPACE, JobQueue, actor_name
from harmonia.jobs.reaper import Reaper
from harmonia.jobs.store import JobStore, new_job_id
from harmonia.redis_client import connect
from harmonia.worker import WorkerProcess
from helpers import short_recovery, wait_for


@pytest.fixture
def queue(settings: Settings) -> JobQueue:
    assert settings.redis_url
    return JobQueue(settings, connect(settings.redis_url), ["noop"])


def _acks(queue: JobQueue, name: str) -> set[str]:
    key = f"dramatiq:__acks__.{queue.broker.broker_id}.{name}"
    return {m.decode() for m in queue.broker.client.smembers(key)}


def _take(consumer: dramatiq.Consumer, n: int, timeout: float = 10.0) -> list[dramatiq.MessageProxy]:
    got: list[dramatiq.MessageProxy] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            got.append(message)
    return got


def test_messages_fetched_but_never_received_are_requeued_by_the_restarted_consumer(queue: JobQueue) -> None:
    for i in range(3):
        queue.send("noop", f"job-{i}", timeout_s=5)
    queue.broker.consume("noop", prefetch=4)
    # the fetch ran on the server but its reply never came back: the ids sit in our ack set
    queue.broker.do_fetch("noop", 3)
    assert len(_acks(queue, "noop")) == 3 and queue.depth("noop") == 0

    restarted = queue.broker.consume("noop", prefetch=4)
    messages = _take(restarted, 3)
    assert sorted(m.args[0] for m in messages) == ["job-0", "job-1", "job-2"]
    for m in messages:
        restarted.ack(m)
    assert _acks(queue, "noop") == set()


def test_prefetched_messages_dropped_with_the_consumer_are_requeued_and_held_ones_are_not(
    queue: JobQueue,
) -> None:
    for i in range(3):
        queue.send("noop", f"job-{i}", timeout_s=5)
    first = queue.broker.consume("noop", prefetch=3)
    running = _take(first, 1)[0]  # handed to a worker thread; two more sit in the prefetch cache
    assert len(first.message_cache) == 2 and len(_acks(queue, "noop")) == 3

    restarted = queue.broker.consume("noop", prefetch=3)  # Dramatiq drops `first` and its cache
    again = _take(restarted, 2)
    assert sorted(m.args[0] for m in again) == sorted({"job-0", "job-1", "job-2"} - {running.args[0]})
    assert _take(restarted, 1, timeout=0.5) == []  # the running one was not delivered twice
    restarted.ack(running)  # the thread finishing the old consumer's message acks on the new one
    for m in again:
        restarted.ack(m)
    assert _acks(queue, "noop") == set() and queue.depth("noop") == 0


def test_delayed_messages_come_back_after_a_restart_empties_the_delay_queue(queue: JobQueue) -> None:
    queue.send("noop", "later", timeout_s=5, delay_ms=10)
    first = queue.broker.consume("noop.DQ", prefetch=2)
    delayed = _take(first, 1)[0]  # now only in the consumer thread's in-memory delay queue
    assert delayed.args == ("later",) and _acks(queue, "noop.DQ") == {delayed.options["redis_message_id"]}

    restarted = queue.broker.consume("noop.DQ", prefetch=2)
    back = _take(restarted, 1)
    assert [m.args for m in back] == [("later",)]
    restarted.ack(back[0])
    assert _acks(queue, "noop.DQ") == set()


def test_a_first_consumer_requeues_nothing(queue: JobQueue) -> None:
    queue.send("noop", "only", timeout_s=5)
    consumer = queue.broker.consume("noop", prefetch=1)
    assert [m.args for m in _take(consumer, 1)] == [("only",)]
    assert _take(consumer, 1, timeout=0.5) == []


def _job(model: str = "noop") -> Job:
    return Job(id=new_job_id(), model=model, queue=model, owner="o", payload={}, timeout_s=10)


def test_the_queued_index_follows_the_job_through_its_states(settings: Settings) -> None:
    assert settings.redis_url
    store = JobStore(connect(settings.redis_url), lease_s=5)
    indexed = lambda job_id: store.r.zscore(QUEUED_KEY, job_id) is not None  # noqa: E731
    job, _ = store.create(_job())
    assert indexed(job.id)
    _, claim, _ = store.claim(job.id)
    assert not indexed(job.id)
    assert store.transition(job.id, JobState.queued, claim=claim)[0] == "ok"  # queued for a retry
    assert indexed(job.id)
    assert store.cancel(job.id) == "canceled" and not indexed(job.id)
    assert store.queued_due(grace_ms=60_000) == []  # nothing is old enough


def test_a_job_and_its_message_are_written_in_one_step(queue: JobQueue, settings: Settings) -> None:
    assert settings.redis_url
    store = JobStore(connect(settings.redis_url), lease_s=5)
    jobs = [_job(), _job()]
    for job in jobs:
        store.create(job, message=queue.outgoing("noop", job.id, 10))
    waiting = _job()  # a sync caller's: to the head of the queue
    store.create(waiting, message=queue.outgoing("noop", waiting.id, 10, front=True))
    for job in (*jobs, waiting):
        status, broker_queue, message_id = store.message_of(job.id)
        assert (status, broker_queue) == ("queued", "noop") and queue.message_alive("noop", message_id)
    # a real Dramatiq consumer reads them: the sync one first, then in order
    consumer = queue.broker.consume("noop", prefetch=3)
    assert [m.args for m in _take(consumer, 3)] == [(waiting.id,), (jobs[0].id,), (jobs[1].id,)]


@pytest.fixture
def reaper_parts(settings: Settings) -> tuple[JobStore, JobQueue, Reaper]:
    assert settings.redis_url
    client = connect(settings.redis_url)
    store = JobStore(client, lease_s=5)
    queue = JobQueue(settings, client, ["noop"])
    return store, queue, Reaper(store, queue, grace_ms=50, interval_s=60)


def _message(store: JobStore, job_id: str) -> tuple[str, str]:
    status, broker_queue, message_id = store.message_of(job_id)
    assert status == "queued"
    return broker_queue, message_id


def test_a_queued_job_whose_message_is_waiting_is_left_alone(reaper_parts: Any) -> None:
    store, queue, reaper = reaper_parts
    job, _ = store.create(_job())
    queue.send("noop", job.id, job.timeout_s)
    broker_queue, message_id = _message(store, job.id)
    assert broker_queue == "noop" and queue.message_alive("noop", message_id)
    time.sleep(0.1)
    assert reaper.reap() == [] and queue.depth("noop") == 1

    queue.send("noop", (delayed := store.create(_job())[0]).id, 10, delay_ms=60_000)
    assert _message(store, delayed.id)[0] == "noop.DQ"  # a delayed retry's message counts too
    time.sleep(0.1)
    assert reaper.reap() == []


def test_a_queued_job_whose_message_is_gone_is_enqueued_again(reaper_parts: Any) -> None:
    store, queue, reaper = reaper_parts
    job, _ = store.create(_job())
    queue.send("noop", job.id, job.timeout_s)
    _, lost = _message(store, job.id)
    # the message disappears from the broker while the job still says queued
    store.r.lrem(f"{NAMESPACE}:noop", 0, lost)
    store.r.hdel(f"{NAMESPACE}:noop.msgs", lost)
    never_sent, _ = store.create(_job())  # the record was written, its message never was
    time.sleep(0.1)
    assert sorted(reaper.reap()) == sorted([job.id, never_sent.id])
    assert queue.depth("noop") == 2
    _, fresh = _message(store, job.id)
    assert fresh != lost and queue.message_alive("noop", fresh)
    assert reaper.reap() == []  # looked at again only after another grace period


def test_a_worker_runs_a_queued_job_that_lost_its_message(settings: Settings) -> None:
    # the reaper's grace is heartbeat_timeout + lease (90 s by default): shortened so the test
    # does not wait a minute and a half
    short_recovery(settings)
    assert settings.redis_url
    worker = WorkerProcess(settings, connect(settings.redis_url))
    worker.start()
    try:
        job, _ = worker.store.create(_job())  # recorded as queued; no message was ever sent
        final = wait_for(lambda: (j := worker.store.get(job.id)).status == JobState.succeeded and j, 60)
        assert final.attempts == 1
    finally:
        worker.stop()


def test_enqueues_outside_send_record_their_message_and_ring_when_due(reaper_parts: Any) -> None:
    store, queue, _ = reaper_parts
    job, _ = store.create(_job())
    queue.send("noop", job.id, job.timeout_s, delay_ms=60_000)  # e.g. a retry with backoff
    assert _message(store, job.id)[0] == "noop.DQ"
    bell = f"{BELL_PREFIX}noop"
    assert store.r.llen(bell) == 0  # a delayed message wakes nobody
    # what Dramatiq's delay-queue consumer does once the delay is over: a copy on the queue itself
    due = dramatiq.Message(
        queue_name="noop", actor_name=actor_name("noop"), args=(job.id,), kwargs={}, options={}
    )
    moved = queue.broker.enqueue(due)
    assert _message(store, job.id) == ("noop", moved.options["redis_message_id"])
    assert store.r.llen(bell) == 1


def test_a_dead_workers_messages_go_back_on_schedule_and_a_live_ones_stay(settings: Settings) -> None:
    assert settings.redis_url
    dead, live, reaper = (JobQueue(settings, connect(settings.redis_url), ["noop"]) for _ in range(3))
    for i in range(4):
        dead.send("noop", f"job-{i}", timeout_s=5)
    doomed = dead.broker.consume("noop", prefetch=3)
    assert len(_take(doomed, 1)) == 1  # one running, two more prefetched: all three in its ack set
    alive = live.broker.consume("noop", prefetch=1)
    assert len(_take(alive, 1)) == 1
    assert len(_acks(dead, "noop")) == 3 and len(_acks(live, "noop")) == 1
    assert reaper.requeue_dead_consumers() == 0  # both heartbeats are fresh: nothing is taken
    # the first worker goes silent for longer than the heartbeat timeout (Dramatiq's own record)
    dead.broker.client.zadd(f"{NAMESPACE}:__heartbeats__", {dead.broker.broker_id: 0})
    assert reaper.requeue_dead_consumers() == 1
    assert _acks(dead, "noop") == set() and dead.depth("noop") == 3
    assert len(_acks(live, "noop")) == 1  # the live worker's message stays where it is
    assert reaper.requeue_dead_consumers() == 0  # done once; nothing left to move
