"""What a worker does with one job: claim it, run its engine, store artifacts, record the result.

Delivery is at-least-once, so everything here is idempotent under redelivery: a finished job is
left alone, a job whose lease is still held by a live worker is deferred, artifacts go to
deterministic keys, and the result is recorded by a transition that checks this attempt's claim.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded

from harmonia.config import Settings
from harmonia.engines.registry import Registry
from harmonia.errors import (
    DependencyDown,
    EngineError,
    EngineUnavailable,
    HarmoniaError,
    InvalidInput,
    JobCanceled,
    JobStopped,
    JobTimedOut,
    RetryableError,
)
from harmonia.jobs.models import Artifact, JobError, JobState
from harmonia.jobs.queue import JobQueue
from harmonia.jobs.store import JobStore
from harmonia.storage import ArtifactStore
from harmonia.webhooks import WebhookNotifier

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25
SWEEP_INTERVAL_S = 600.0


class JobLost(JobStopped):
    """This attempt no longer holds the job (another attempt took over, or it finished)."""


class RetriesExhausted(HarmoniaError):
    """Raised to Dramatiq after the last retry so the message lands in the dead-letter set."""


@dataclass
class JobContext:
    """The RunContext of one attempt. The lease keeper and the engine both touch it."""

    store: JobStore
    job_id: str
    claim: str
    deadline: float
    timeout_s: float
    cancel_requested: bool = False
    lost: bool = False
    #: when Redis last confirmed this attempt's lease (monotonic clock)
    confirmed_at: float = field(default_factory=time.monotonic)
    _last_beat: float = field(default=0.0)
    _last_message: str | None = field(default=None)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self) -> None:
        if self.lost:
            raise JobLost("another attempt holds this job now")
        if self.cancel_requested:
            raise JobCanceled("canceled")
        if time.monotonic() > self.deadline:
            raise JobTimedOut("time limit reached")

    def progress(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        fraction = min(max(float(fraction), 0.0), 1.0)
        # throttled, but every new stage (message) and the end are always recorded
        if now - self._last_beat >= PROGRESS_INTERVAL_S or fraction >= 1.0 or message != self._last_message:
            self._last_beat, self._last_message = now, message
            self.apply(self.store.beat(self.job_id, self.claim, {"fraction": fraction, "message": message}))
        self.check()

    def event(self, kind: str, data: dict[str, Any]) -> None:
        self.check()
        self.store.add_event(self.job_id, kind, data)

    def apply(self, beat: str) -> None:
        if beat == "lost":
            self.lost = True
            return
        self.confirmed_at = time.monotonic()
        if beat == "cancel":
            self.cancel_requested = True


class LeaseKeeper:
    """Refreshes the lease of every job this process runs, so only a dead worker's jobs expire,
    and learns of cancel requests even while an engine is between checks.

    An attempt whose lease could not be confirmed for `lease_s` (Redis unreachable: this worker is
    cut off) counts as lost: by then another worker may take the job over, so this one stops at its
    engine's next check instead of doing the same work twice."""

    def __init__(self, store: JobStore, interval_s: float, lease_s: float) -> None:
        self.store = store
        self.interval_s = interval_s
        self.lease_s = lease_s
        self._active: dict[str, JobContext] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def add(self, ctx: JobContext) -> None:
        with self._lock:
            self._active[ctx.job_id] = ctx

    def remove(self, ctx: JobContext) -> None:
        with self._lock:
            if self._active.get(ctx.job_id) is ctx:
                del self._active[ctx.job_id]

    def running(self) -> int:
        with self._lock:
            return len(self._active)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                contexts = list(self._active.values())
            for ctx in contexts:
                try:
                    ctx.apply(self.store.beat(ctx.job_id, ctx.claim))
                except DependencyDown:
                    log.warning("lease refresh for job %s failed: redis unreachable", ctx.job_id)
                    if time.monotonic() - ctx.confirmed_at > self.lease_s and not ctx.lost:
                        log.warning("job %s: lease lapsed while cut off; stopping this attempt", ctx.job_id)
                        ctx.lost = True


class Reaper:
    """Bounded recovery for at-least-once delivery. Every tick (`interval_s`) it
    - puts the messages of dead or cut-off workers (running, prefetched, delayed) back on their
      queues, by running Dramatiq's own dead-worker maintenance (`JobQueue.requeue_dead_consumers`)
      instead of waiting for Dramatiq to run it by chance;
    and, as a last net, re-enqueues
    - running jobs that nobody has held for `grace_ms` (lease lapsed: e.g. the message was acked
      by an attempt that lost its lease while cut off), and
    - queued jobs that no broker message carries any more (e.g. a retry whose re-enqueue failed
      while Redis was going down, after the job was already marked queued for it).
    The claim makes a duplicate message harmless: a job is run by one attempt at a time and
    records one result."""

    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        grace_ms: int,
        interval_s: float,
        artifacts: ArtifactStore | None = None,
        result_ttl_s: int = 0,
    ) -> None:
        self.store, self.queue, self.grace_ms, self.interval_s = store, queue, grace_ms, interval_s
        self.artifacts, self.result_ttl_s = artifacts, result_ttl_s
        self._last_sweep = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="orphan-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def reap(self) -> list[str]:
        self.queue.requeue_dead_consumers()
        revived = []
        for job_id in self.store.orphans(self.grace_ms):
            job = self.store.get(job_id)
            if job is not None and job.status == JobState.running and job.queue in self.queue.actors:
                log.warning("job %s was orphaned (lease lapsed, no message); re-enqueuing it", job_id)
                self.queue.send(job.queue, job_id, job.timeout_s)
                revived.append(job_id)
        for job_id in self.store.queued_due(self.grace_ms):
            status, broker_queue, message_id = self.store.message_of(job_id)
            if status != JobState.queued.value or (
                message_id and self.queue.message_alive(broker_queue, message_id)
            ):
                continue
            job = self.store.get(job_id)
            if job is not None and job.status == JobState.queued and job.queue in self.queue.actors:
                log.warning("queued job %s has no message on the broker; re-enqueuing it", job_id)
                self.queue.send(job.queue, job_id, job.timeout_s)
                revived.append(job_id)
        return revived

    def sweep(self) -> int:
        """Remove artifacts whose job record has expired (result TTL)."""
        if self.artifacts is None or self.result_ttl_s <= 0:
            return 0
        self._last_sweep = time.monotonic()
        return self.artifacts.sweep(self.result_ttl_s, lambda job_id: self.store.get(job_id) is not None)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.reap()
                if time.monotonic() - self._last_sweep > SWEEP_INTERVAL_S:
                    self.sweep()
            except DependencyDown:
                log.warning("orphan check skipped: redis unreachable")
            except OSError as exc:
                log.warning("artifact sweep failed: %s", exc)


class Runner:
    """Runs jobs by id. One per worker process; called from Dramatiq worker threads."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        queue: JobQueue,
        registry: Registry,
        artifacts: ArtifactStore,
        leases: LeaseKeeper,
        webhooks: WebhookNotifier,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.registry = registry
        self.artifacts = artifacts
        self.leases = leases
        self.webhooks = webhooks
        self.identity = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, job_id: str) -> None:
        self.run(job_id)

    def run(self, job_id: str) -> None:
        outcome, claim, extra = self.store.claim(job_id, self.identity)
        if outcome == "leased":
            job = self.store.get(job_id)
            if job is not None:
                log.info("job %s is held by a live worker; checking again in %d ms", job_id, extra)
                self.queue.send(job.queue, job_id, job.timeout_s, delay_ms=extra + 1000)
            return
        if outcome != "claimed":
            log.info("job %s not run: %s", job_id, outcome)
            if outcome == "canceled":  # canceled before it ran: it finished now
                self.webhooks.notify(job_id)
            return
        job = self.store.get(job_id)
        if job is None:
            return
        ctx = JobContext(
            self.store, job_id, claim, deadline=time.monotonic() + job.timeout_s, timeout_s=job.timeout_s
        )
        self.leases.add(ctx)
        try:
            self._attempt(job.model, job.payload, ctx)
        finally:
            self.leases.remove(ctx)

    def _attempt(self, model: str, payload: dict[str, Any], ctx: JobContext) -> None:
        job_id, claim = ctx.job_id, ctx.claim
        try:
            engine = self.registry.engine(model)
            parsed = engine.input_model.model_validate(payload)
            result = engine.run(parsed, ctx)
            ctx.check()
            stored = [self.artifacts.put(job_id, a.name, a.data, a.content_type) for a in result.artifacts]
        except JobLost:
            log.warning("job %s: attempt superseded; nothing recorded", job_id)
            return
        except JobCanceled:
            self._finish(ctx, JobState.canceled, error=None, reason="canceled while running")
            return
        except (JobTimedOut, TimeLimitExceeded):
            self._fail(ctx, "timeout", f"time limit of {ctx.timeout_s:g} s reached")
            return
        except (RetryableError, DependencyDown) as exc:  # a dependency hiccup: retry with backoff
            self._retry_or_fail(ctx, exc)
            return
        except (EngineError, EngineUnavailable, InvalidInput) as exc:
            self._fail(ctx, exc.code, getattr(exc, "message", None) or str(exc))
            return
        except Exception as exc:
            log.exception("job %s: engine raised", job_id)
            self._fail(ctx, "internal", f"{type(exc).__name__}: {exc}")
            raise RetriesExhausted(str(exc)) from exc
        fields = {
            "result": result.output,
            "artifacts": [
                Artifact(name=a.name, content_type=a.content_type, size=a.size).model_dump() for a in stored
            ],
            "progress": {"fraction": 1.0, "message": "done"},
            "error": None,
        }
        outcome, _ = self.store.transition(job_id, JobState.succeeded, claim=claim, fields=fields)
        if outcome != "ok":
            log.warning("job %s: result not recorded (%s)", job_id, outcome)
        else:
            self.webhooks.notify(job_id)

    def _retry_or_fail(self, ctx: JobContext, exc: RetryableError | DependencyDown) -> None:
        message = CurrentMessage.get_current_message()
        error = JobError(code=exc.code, message=str(exc), retryable=True).model_dump()
        retries = int(message.options.get("retries", 0)) if message is not None else 0
        if retries < self.settings.max_retries:
            outcome, _ = self.store.transition(
                ctx.job_id,
                JobState.queued,
                claim=ctx.claim,
                fields={"error": error},
                event={"reason": f"retrying after: {exc}", "retry": retries + 1},
            )
            if outcome == "ok":
                # Dramatiq's Retries middleware re-enqueues it with backoff (it retries RetryableError)
                if isinstance(exc, RetryableError):
                    raise exc
                raise RetryableError(str(exc)) from exc
            return
        self._fail(ctx, exc.code, f"{exc} (gave up after {retries + 1} attempts)", retryable=True)
        raise RetriesExhausted(str(exc)) from exc

    def _fail(self, ctx: JobContext, code: str, message: str, *, retryable: bool = False) -> None:
        error = JobError(code=code, message=message, retryable=retryable).model_dump()
        self._finish(ctx, JobState.failed, error=error, reason=message)

    def _finish(self, ctx: JobContext, state: JobState, error: dict[str, Any] | None, reason: str) -> None:
        outcome, _ = self.store.transition(
            ctx.job_id, state, claim=ctx.claim, fields={"error": error}, event={"reason": reason}
        )
        if outcome != "ok":
            log.warning("job %s: could not record %s (%s)", ctx.job_id, state.value, outcome)
        else:
            self.webhooks.notify(ctx.job_id)
