"""What a worker does with one job: claim it, run its engine, store artifacts, record the result.

Delivery is at-least-once, so everything here is idempotent under redelivery: a finished job is
left alone, a job whose lease is still held by a live worker is deferred, artifacts go to
deterministic keys, and the result is recorded by a transition that checks this attempt's claim.
"""

from __future__ import annotations

import logging
import os
import socket
import time
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
    JobTimedOut,
    RetryableError,
)
from harmonia.jobs.lease import JobContext, JobLost, LeaseKeeper
from harmonia.jobs.models import Artifact, JobError, JobState
from harmonia.jobs.queue import JobQueue
from harmonia.jobs.store import Claim, JobStore, Outcome
from harmonia.storage import ArtifactStore
from harmonia.webhooks import WebhookNotifier

log = logging.getLogger(__name__)


class RetriesExhausted(HarmoniaError):
    """Raised to Dramatiq after the last retry so the message lands in the dead-letter set."""


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
        if outcome is Claim.leased:
            job = self.store.get(job_id)
            if job is not None:
                log.info("job %s is held by a live worker; checking again in %d ms", job_id, extra)
                self.queue.send(job.queue, job_id, job.timeout_s, delay_ms=extra + 1000)
            return
        if outcome is not Claim.claimed:
            log.info("job %s not run: %s", job_id, outcome)
            if outcome is Claim.canceled:  # canceled before it ran: it finished now
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
        if outcome is not Outcome.ok:
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
            if outcome is Outcome.ok:
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
        if outcome is not Outcome.ok:
            log.warning("job %s: could not record %s (%s)", ctx.job_id, state.value, outcome)
        else:
            self.webhooks.notify(ctx.job_id)
