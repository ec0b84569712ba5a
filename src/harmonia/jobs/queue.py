"""The Dramatiq Redis broker and one `run_job` actor per queue. Messages carry only the job id.

KEDA scales workers on `LLEN dramatiq:<queue>`; running messages sit in Dramatiq's per-worker ack
sets instead, so scale-down relies on workers finishing running jobs on SIGTERM within the pod's
termination grace period (deploy/k8s/README.md).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis, q_name
from dramatiq.middleware import CurrentMessage, Retries, TimeLimit

from harmonia.config import Settings
from harmonia.errors import DependencyDown, RetryableError
from harmonia.jobs.keys import BELL_PREFIX, MSG_ID_FIELD, MSG_QUEUE_FIELD, job_key

log = logging.getLogger(__name__)

NAMESPACE = "dramatiq"
#: The Dramatiq TimeLimit is a backstop behind the runner's own deadline (checked at each
#: engine check), so it fires only for an engine that stopped checking.
TIME_LIMIT_GRACE_S = 30.0


def queue_key(queue: str) -> str:
    """Dramatiq's list of message ids waiting on a queue (what KEDA's redis scaler reads)."""
    return f"{NAMESPACE}:{queue}"


def messages_key(queue: str) -> str:
    """Dramatiq's hash of a queue's messages: id -> message, until acked or nacked."""
    return f"{NAMESPACE}:{queue}.msgs"


def acks_key(worker: str, queue: str) -> str:
    """Dramatiq's set of a worker's fetched, not yet acknowledged message ids on a queue."""
    return f"{NAMESPACE}:__acks__.{worker}.{queue}"


HEARTBEATS_KEY = f"{NAMESPACE}:__heartbeats__"


class _BellConsumer(_RedisConsumer):  # type: ignore[misc]
    """Dramatiq's Redis consumer with two changes.

    Doorbell: the stock consumer polls an idle queue with a sleep of up to the worker timeout
    (1 s), which puts up to a second between submit and start. This one polls without that sleep
    and instead waits on a "doorbell" list that senders push to, so an idle worker wakes at once.

    Recovery after a connection error: a fetch moves message ids into this worker's ack set in
    Redis before the reply reaches us, and Dramatiq drops its prefetch cache and delay queue when
    it restarts a consumer on a connection error. Either way a message can sit in the ack set of a
    live worker (whose heartbeat never lapses, so Dramatiq never redelivers it) while no thread
    holds it: its job would stay queued forever. So the first thing a restarted consumer does is
    put every message in its ack set that no thread of this process holds back on the queue. A
    message that was in fact still held only runs twice, which the job's claim makes harmless.
    """

    def __init__(
        self, broker: _Broker, queue_name: str, prefetch: int, idle_ms: int, held: set[str], recover: bool
    ) -> None:
        super().__init__(broker, queue_name, prefetch, timeout=1)
        self.bell = BELL_PREFIX + queue_name
        self.idle_s = max(idle_ms / 1000, 0.01)
        #: Redis message ids handed to this process's threads and not yet acked, shared by every
        #: consumer of this queue in the process (a restarted consumer inherits them).
        self.held = held
        self.recover = recover

    def __next__(self):  # type: ignore[no-untyped-def]
        self.broker.ticks[self.queue_name] = time.monotonic()
        if self.recover:
            self._requeue_unheld()
        # Wait on the bell only when a fetch came back empty (the queue is idle). With the
        # prefetch window full, super() returns None without fetching; waiting then would stall a
        # busy queue for up to idle_s per message.
        could_fetch = not self.message_cache and self.outstanding_message_count < self.prefetch
        message = super().__next__()
        if message is not None:
            self.held.add(message.options["redis_message_id"])
        elif could_fetch:
            try:
                self.broker.client.blpop([self.bell], timeout=self.idle_s)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise dramatiq.errors.ConnectionClosed(exc) from None
        return message

    def ack(self, message: dramatiq.MessageProxy) -> None:
        try:
            super().ack(message)
        finally:
            self.held.discard(message.options["redis_message_id"])

    def nack(self, message: dramatiq.MessageProxy) -> None:
        try:
            super().nack(message)
        finally:
            self.held.discard(message.options["redis_message_id"])

    def _requeue_unheld(self) -> None:
        if self.queue_name.endswith(".DQ"):
            # a delay-queue consumer's messages wait in its consumer thread's delay queue, which
            # Dramatiq empties when it restarts the consumer: none is held any more
            self.held.clear()
        key = acks_key(self.broker.broker_id, self.queue_name)
        try:
            in_acks = {m.decode() for m in self.broker.client.smembers(key)}
            lost = sorted(in_acks - self.held)
            if lost:
                log.warning(
                    "re-enqueuing %d message(s) of %s that no thread holds", len(lost), self.queue_name
                )
                self.broker.do_requeue(self.queue_name, *lost)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise dramatiq.errors.ConnectionClosed(exc) from None
        self.recover = False


class _Broker(RedisBroker):  # type: ignore[misc]
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._held: dict[str, set[str]] = {}
        #: when each queue's consumer last went round its loop (or was restarted after a connection
        #: error): the worker's liveness check reads it
        self.ticks: dict[str, float] = {}

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> _BellConsumer:
        self.ticks[queue_name] = time.monotonic()
        restarted = queue_name in self._held
        held = self._held.setdefault(queue_name, set())
        return _BellConsumer(self, queue_name, prefetch, idle_ms=timeout, held=held, recover=restarted)


#: message option: put the message at the head of its queue (a sync job: its caller is waiting)
FRONT_OPTION = "harmonia_front"

# After an enqueue, in one round trip: record on the job which broker message carries it now (only
# for a job that still exists); for a message due now, move it to the head of its queue when asked
# (only if no worker fetched it meanwhile) and ring the queue's doorbell (capped).
# KEYS: job, bell, queue list   ARGV: broker queue, message id, ring ('1' / '0'), front ('1' / '0')
_AFTER_ENQUEUE = f"""
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], '{MSG_QUEUE_FIELD}', ARGV[1], '{MSG_ID_FIELD}', ARGV[2])
end
if ARGV[3] == '1' then
  if ARGV[4] == '1' and redis.call('LREM', KEYS[3], -1, ARGV[2]) == 1 then
    redis.call('LPUSH', KEYS[3], ARGV[2])
  end
  redis.call('LPUSH', KEYS[2], 1)
  redis.call('LTRIM', KEYS[2], 0, 63)
end
"""


class _AfterEnqueue(dramatiq.Middleware):  # type: ignore[misc]
    """After every enqueue (`JobQueue.send`, a retry, a delayed message moved to its queue):
    record on the job which broker message carries it, so the reaper can see a queued job whose
    message is gone, and, when the message is due now, move it to the head of its queue if it asks
    to be first (`FRONT_OPTION`) and ring the queue's doorbell. Best effort: the message is on the
    broker either way (a missed note costs at most a harmless duplicate later, a missed ring at most
    the consumer's idle poll, a missed move its place in line)."""

    def __init__(self, client: redis.Redis) -> None:
        self.script = client.register_script(_AFTER_ENQUEUE)

    def after_enqueue(self, broker: RedisBroker, message: dramatiq.Message, delay: int | None) -> None:
        if not message.args:
            return
        queue = q_name(message.queue_name)
        front = "1" if message.options.get(FRONT_OPTION) else "0"
        try:
            self.script(
                keys=[job_key(str(message.args[0])), BELL_PREFIX + queue, queue_key(queue)],
                args=[
                    message.queue_name,
                    message.options["redis_message_id"],
                    "1" if delay is None else "0",
                    front,
                ],
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("after enqueueing job %s: redis unreachable (%s)", message.args[0], exc)


@dataclass(frozen=True)
class Outgoing:
    """A Dramatiq message ready to enqueue, with the keys it goes to: what `JobStore.create` writes
    in the same atomic step as the job record (`JobQueue.outgoing` builds it)."""

    queue_key: str
    messages_key: str
    bell_key: str
    message_id: str  # Dramatiq's redis_message_id: the id in the queue list and the messages hash
    data: bytes
    front: bool


def actor_name(queue: str) -> str:
    return f"run_job__{queue}"


def should_retry(max_retries: int) -> Callable[[int, BaseException], bool]:
    def retry_when(retries: int, exc: BaseException) -> bool:
        return isinstance(exc, RetryableError) and retries < max_retries

    return retry_when


class JobQueue:
    """The broker plus its actors. The gateway sends with it; the worker consumes with it."""

    def __init__(self, settings: Settings, client: redis.Redis, queues: Iterable[str]) -> None:
        self.settings = settings
        self.broker = _Broker(
            client=client,
            namespace=NAMESPACE,
            heartbeat_timeout=settings.heartbeat_timeout_ms,
            maintenance_chance=settings.maintenance_chance,
            middleware=[
                TimeLimit(),
                Retries(
                    max_retries=settings.max_retries,
                    min_backoff=settings.min_backoff_ms,
                    max_backoff=settings.max_backoff_ms,
                    retry_when=should_retry(settings.max_retries),
                ),
                CurrentMessage(),
                _AfterEnqueue(client),
            ],
        )
        self.actors: dict[str, dramatiq.Actor] = {}
        self._handler: Callable[[str], None] | None = None
        for queue in queues:
            self.actors[queue] = dramatiq.Actor(
                self._dispatch,
                broker=self.broker,
                actor_name=actor_name(queue),
                queue_name=queue,
                priority=0,
                options={"max_retries": settings.max_retries},
            )

    def _dispatch(self, job_id: str) -> None:
        if self._handler is None:
            raise RuntimeError("this JobQueue has no handler; only workers consume")
        self._handler(job_id)

    def set_handler(self, handler: Callable[[str], None]) -> None:
        self._handler = handler

    def _actor(self, queue: str) -> dramatiq.Actor:
        actor = self.actors.get(queue)
        if actor is None:
            raise KeyError(f"queue {queue!r} is not declared")
        return actor

    @staticmethod
    def _options(timeout_s: float, front: bool) -> dict[str, Any]:
        """A run's message options: its time limit (a backstop behind the runner's deadline) and,
        for a waiting caller's job, `FRONT_OPTION` (kept when the message is retried)."""
        options: dict[str, Any] = {"time_limit": int((timeout_s + TIME_LIMIT_GRACE_S) * 1000)}
        if front:
            options[FRONT_OPTION] = True
        return options

    def send(self, queue: str, job_id: str, timeout_s: float, delay_ms: int | None = None) -> str:
        """Enqueue one run of `job_id` through Dramatiq (the worker's retries, the reaper, a
        deferred claim). Returns the Dramatiq message id."""
        try:
            message = self._actor(queue).send_with_options(
                args=(job_id,), delay=delay_ms, **self._options(timeout_s, front=False)
            )
        except (redis.ConnectionError, redis.TimeoutError, dramatiq.errors.ConnectionError) as exc:
            raise DependencyDown(f"redis unreachable: {exc}") from exc
        return message.message_id

    def outgoing(self, queue: str, job_id: str, timeout_s: float, *, front: bool = False) -> Outgoing:
        """The message for one run of `job_id`, built as Dramatiq's Redis broker builds it (the same
        actor, options and encoding), not sent: the gateway writes it together with the job's record,
        in one round trip. Dramatiq's own enqueue is one HSET into the queue's messages hash and one
        push onto its list, which is all the store's script does with it. `front` puts it at the
        head of its queue (a caller is waiting for it), this time and when it is retried."""
        redis_id = str(uuid.uuid4())
        message = self._actor(queue).message_with_options(
            args=(job_id,), redis_message_id=redis_id, **self._options(timeout_s, front)
        )
        return Outgoing(
            queue_key=queue_key(queue),
            messages_key=messages_key(queue),
            bell_key=BELL_PREFIX + queue,
            message_id=redis_id,
            data=message.encode(),
            front=front,
        )

    def message_alive(self, broker_queue: str, message_id: str) -> bool:
        """Whether a message is still on the broker (waiting, delayed, or fetched and not yet
        acknowledged): Dramatiq drops it from the queue's message hash only on ack or nack."""
        try:
            return bool(self.broker.client.hexists(messages_key(broker_queue), message_id))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise DependencyDown(f"redis unreachable: {exc}") from exc

    def requeue_dead_consumers(self) -> int:
        """Put the messages of every consumer whose heartbeat lapsed (a dead or cut-off worker:
        what it was running, had prefetched, or held in its delay queue) back on their queues, now.

        This is Dramatiq's own dead-worker maintenance (its `dispatch` script), which Dramatiq itself
        runs only on a random 1 in 1,000 of its commands; the reaper runs it on a schedule so the
        recovery time is bounded. Workers are dead by the heartbeats Dramatiq keeps
        (`heartbeat_timeout_ms` without a fetch); a live worker's messages are never touched.
        Only queues where a dead worker holds messages are swept (Dramatiq's sweep scans keys), so a
        death costs one sweep. Returns how many dead workers held messages (nothing dead costs one
        round trip)."""
        client = self.broker.client
        now = current_millis()
        timeout = self.broker.heartbeat_timeout
        queues = sorted(self.broker.get_declared_queues() | self.broker.get_declared_delay_queues())
        try:
            dead = [d.decode() for d in client.zrangebyscore(HEARTBEATS_KEY, 0, now - timeout)]
            if not dead:
                return 0
            # which of their ack sets hold messages (a silent gateway, which only enqueues, holds none)
            pipe = client.pipeline(transaction=False)
            pairs = [(worker, queue) for worker in dead for queue in queues]
            for worker, queue in pairs:
                pipe.exists(acks_key(worker, queue))
            held = [pair for pair, n in zip(pairs, pipe.execute(), strict=True) if n]
            if not held:
                return 0
            holders = {worker for worker, _ in held}
            log.warning("requeueing messages of %d worker(s) silent for over %d ms", len(holders), timeout)
            dispatch = self.broker.scripts["dispatch"]
            for queue in sorted({queue for _, queue in held}):
                # an unknown command: the script does its maintenance (forced on) and nothing else;
                # the caller's id is this reaper's own, so no worker's heartbeat is refreshed by it
                dispatch(
                    keys=[NAMESPACE],
                    args=[
                        "harmonia-maintenance", now, queue, self.reaper_id, timeout,
                        self.broker.dead_message_ttl, 1, self.broker._max_unpack_size(),
                    ],
                )  # fmt: skip
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise DependencyDown(f"redis unreachable: {exc}") from exc
        return len(holders)

    @property
    def reaper_id(self) -> str:
        return f"harmonia-reaper.{self.broker.broker_id}"

    def depth(self, queue: str) -> int:
        """Messages waiting (not running) on a queue: what KEDA's redis scaler reads."""
        return int(self.broker.client.llen(queue_key(queue)))

    def depths(self, queues: Iterable[str]) -> dict[str, tuple[int, int]]:
        """(waiting, dead-lettered) messages per queue, in one round trip (metrics)."""
        names = list(queues)
        pipe = self.broker.client.pipeline(transaction=False)
        for queue in names:
            pipe.llen(queue_key(queue))
            pipe.zcard(f"{queue_key(queue)}.XQ")
        try:
            values = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise DependencyDown(f"redis unreachable: {exc}") from exc
        return {q: (int(values[2 * i]), int(values[2 * i + 1])) for i, q in enumerate(names)}
