"""The reaper: bounded recovery of jobs whose worker died or was cut off (see `Reaper`), and the
sweep of artifacts whose job record expired. One runs in every worker process."""

from __future__ import annotations

import logging
import threading
import time

from harmonia.errors import DependencyDown
from harmonia.jobs.models import JobState
from harmonia.jobs.queue import JobQueue
from harmonia.jobs.store import JobStore
from harmonia.storage import ArtifactStore

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 600.0


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
