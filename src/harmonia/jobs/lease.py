"""One attempt's hold on a job: its `JobContext` (what the engine reports progress to and checks for
cancel, time limit and loss) and the `LeaseKeeper` that renews the leases of every attempt this
process runs, so that only a dead or cut-off worker's jobs expire."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from harmonia.errors import DependencyDown, JobCanceled, JobStopped, JobTimedOut
from harmonia.jobs.store import Beat, JobStore

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25


class JobLost(JobStopped):
    """This attempt no longer holds the job (another attempt took over, or it finished)."""


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

    def apply(self, beat: Beat) -> None:
        if beat is Beat.lost:
            self.lost = True
            return
        self.confirmed_at = time.monotonic()
        if beat is Beat.cancel:
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
