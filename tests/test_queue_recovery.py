"""A worker that lost its connection to Redis must not strand messages in its own ack set: the
fetch script may have moved them there before the reply was lost, or Dramatiq may have dropped
its prefetch cache and delay queue when it restarted the consumer. A restarted consumer puts every
such message back on the queue and leaves alone the ones this process's threads still hold."""

from __future__ import annotations

import time

import dramatiq
import pytest

from harmonia.config import Settings
from harmonia.jobs.queue import JobQueue
from harmonia.redis_client import connect


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
