"""The worker process (`harmonia worker`): a Dramatiq worker that runs jobs through engines.

SIGTERM/SIGINT stop it gracefully: it takes no new messages, lets running jobs finish (up to
`shutdown_timeout_s`) and returns prefetched ones to the queue. A job still running past that is
left unacked, so Dramatiq redelivers it once this worker's heartbeat lapses (and its lease expires).

Liveness: while every consumer and worker thread is alive and every consumer keeps going round its
loop (a Redis outage restarts consumers, which counts as alive), the main loop touches
`Settings.liveness_file`; `harmonia probe worker` (the container and Kubernetes liveness probe)
fails when that file is older than `worker_liveness_max_age_s`, so a wedged worker is restarted.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import redis
from dramatiq import Worker

from harmonia.config import Settings
from harmonia.engines.registry import Registry
from harmonia.jobs.lease import LeaseKeeper
from harmonia.jobs.queue import JobQueue
from harmonia.jobs.reaper import Reaper
from harmonia.jobs.runner import Runner
from harmonia.jobs.store import JobStore
from harmonia.storage import ArtifactStore, build_store
from harmonia.webhooks import WebhookNotifier

log = logging.getLogger(__name__)

#: A consumer's slowest honest round: a Redis call up to its socket timeout (10 s), a reconnect up
#: to its connect timeout (3 s), Dramatiq's restart delay after a connection error (3 s).
CONSUMER_STALL_S = 20.0


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
        self.leases = LeaseKeeper(
            self.store, interval_s=max(settings.lease_s / 3, 0.2), lease_s=settings.lease_s
        )
        self.artifacts = artifacts or build_store(settings)
        self.webhooks = WebhookNotifier(settings, self.store)
        self.runner = Runner(
            settings, self.store, self.queue, self.registry, self.artifacts, self.leases, self.webhooks
        )
        self.queue.set_handler(self.runner)
        grace_ms = settings.heartbeat_timeout_ms + int(settings.lease_s * 1000)
        self.reaper = Reaper(
            self.store,
            self.queue,
            grace_ms,
            # a tick at least every lease: a dead worker's messages are back within
            # heartbeat_timeout + lease of its last heartbeat
            interval_s=max(min(grace_ms / 4000, settings.lease_s), 1.0),
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
        self.webhooks.close()
        self.queue.broker.close()

    def problems(self) -> list[str]:
        """Why this worker is wedged (empty when healthy): a dead consumer or worker thread, or a
        consumer that has not gone round its loop for CONSUMER_STALL_S (or half the liveness
        limit, if that is longer)."""
        found = []
        stall_s = max(CONSUMER_STALL_S, self.settings.worker_liveness_max_age_s / 2)
        now = time.monotonic()
        for queue, thread in self._worker.consumers.items():
            idle = now - self.queue.broker.ticks.get(queue, now)
            if not thread.is_alive():
                found.append(f"the consumer of {queue} has stopped")
            elif idle > stall_s:
                found.append(f"the consumer of {queue} has been stuck for {idle:.0f} s")
        dead = sum(1 for thread in self._worker.workers if not thread.is_alive())
        if dead:
            found.append(f"{dead} worker thread(s) have stopped")
        return found

    def beat_liveness(self, path: Path) -> None:
        """Touch the liveness file if healthy; log why not otherwise."""
        problems = self.problems()
        if problems:
            log.error("worker wedged, not touching %s: %s", path, "; ".join(problems))
            return
        path.touch()

    def run_forever(self) -> None:
        """Run until SIGTERM/SIGINT, then stop gracefully. Meanwhile keep the liveness file fresh."""
        stop = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("received %s", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        alive = self.settings.liveness_file
        alive.parent.mkdir(parents=True, exist_ok=True)
        self.start()
        self.beat_liveness(alive)
        interval = min(5.0, self.settings.worker_liveness_max_age_s / 4)
        while not stop.wait(interval):
            self.beat_liveness(alive)
        # Draining (running jobs finish, up to shutdown_timeout_s) is alive too: keep the file fresh
        # so a liveness probe does not kill the process mid-drain (its consumers have stopped on
        # purpose, so the wedge checks no longer apply).
        draining = threading.Thread(target=self.stop, name="drain")
        draining.start()
        while draining.is_alive():
            alive.touch()
            draining.join(interval)
        alive.unlink(missing_ok=True)


def liveness_age(path: Path) -> float | None:
    """Seconds since the worker last touched its liveness file; None when there is no such file."""
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None
