"""The worker process (`harmonia worker`): a Dramatiq worker that runs jobs through engines.

SIGTERM/SIGINT stop it gracefully: it takes no new messages, lets running jobs finish (up to
`shutdown_timeout_s`) and returns prefetched ones to the queue. A job still running past that is
left unacked, so Dramatiq redelivers it once this worker's heartbeat lapses (and its lease expires).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable

import redis
from dramatiq import Worker

from harmonia.config import Settings
from harmonia.engines.registry import Registry
from harmonia.jobs.queue import JobQueue
from harmonia.jobs.runner import LeaseKeeper, Reaper, Runner
from harmonia.jobs.store import JobStore
from harmonia.storage import ArtifactStore, build_store

log = logging.getLogger(__name__)


class WorkerProcess:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        queues: Iterable[str] | None = None,
        *,
        registry: Registry | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or Registry(settings)
        known = {spec.queue for spec in self.registry.specs.values()}
        self.queues = sorted(set(queues or settings.queues) & known)
        if not self.queues:
            raise ValueError(
                f"no known queue among {list(queues or settings.queues)}; known: {sorted(known)}"
            )
        self.store = JobStore(
            client,
            events_maxlen=settings.events_maxlen,
            result_ttl_s=settings.result_ttl_s,
            lease_s=settings.lease_s,
        )
        # every known queue is declared (the reaper may re-enqueue a job of any of them); the
        # Dramatiq worker below consumes only this worker's queues
        self.queue = JobQueue(settings, client, sorted(known))
        self.leases = LeaseKeeper(self.store, interval_s=max(settings.lease_s / 3, 0.2))
        self.artifacts = artifacts or build_store(settings)
        self.runner = Runner(settings, self.store, self.queue, self.registry, self.artifacts, self.leases)
        self.queue.set_handler(self.runner)
        grace_ms = settings.heartbeat_timeout_ms + int(settings.lease_s * 1000)
        self.reaper = Reaper(
            self.store,
            self.queue,
            grace_ms,
            interval_s=max(grace_ms / 4000, 1.0),
            artifacts=self.artifacts,
            result_ttl_s=settings.result_ttl_s,
        )
        self._worker = Worker(
            self.queue.broker, queues=set(self.queues), worker_threads=settings.worker_threads
        )
        self._stopped = threading.Event()

    def start(self) -> None:
        self.leases.start()
        self.reaper.start()
        self._worker.start()
        log.info("worker consuming %s with %d threads", ",".join(self.queues), self.settings.worker_threads)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("worker stopping: finishing %d running job(s)", self.leases.running())
        self._worker.stop(timeout=int(self.settings.shutdown_timeout_s * 1000))
        self.leases.stop()
        self.reaper.stop()
        self.runner.close()
        self.queue.broker.close()

    def run_forever(self) -> None:
        """Run until SIGTERM/SIGINT, then stop gracefully."""
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("received %s", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        stop.wait()
        self.stop()
