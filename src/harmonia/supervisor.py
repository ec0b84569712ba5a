"""`harmonia up`'s process group: the embedded Valkey (unless a Redis URL is set) and worker
subprocesses, restarted if one dies. The gateway runs in the calling process.

Workers run as separate processes so an engine crash, or a SIGKILL, takes down one worker and not
the gateway; Dramatiq redelivers what a dead worker held.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from harmonia.config import Settings
from harmonia.embedded import EmbeddedValkey

log = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if `harmonia up` itself dies, so no worker outlives it."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Supervisor:
    def __init__(self, settings: Settings, workers: int = 1) -> None:
        self.settings = settings
        self.n_workers = max(1, workers)
        self.embedded: EmbeddedValkey | None = None
        self.redis_url: str | None = settings.redis_url
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._watchdog, name="worker-watchdog", daemon=True)

    def start(self) -> str:
        if not self.redis_url:
            self.embedded = EmbeddedValkey(
                self.settings.data_dir, appendfsync=self.settings.embedded_appendfsync
            )
            self.redis_url = self.embedded.start()
        for i in range(self.n_workers):
            self.procs.append(self._spawn(i))
        self._watch.start()
        return self.redis_url

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["HARMONIA_REDIS_URL"] = self.redis_url or ""
        env["HARMONIA_DATA_DIR"] = str(self.settings.data_dir)
        env["HARMONIA_WORKER_THREADS"] = str(self.settings.worker_threads)
        proc = subprocess.Popen(
            [sys.executable, "-m", "harmonia", "worker"], env=env, preexec_fn=_die_with_parent
        )
        log.info("worker %d started (pid %d)", index, proc.pid)
        return proc

    def _watchdog(self) -> None:
        while not self._stopping.wait(1.0):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self._stopping.is_set():
                    log.warning("worker %d (pid %d) exited with %s; restarting", i, proc.pid, proc.returncode)
                    self.procs[i] = self._spawn(i)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        """SIGTERM the workers (they finish running jobs), wait, then stop Valkey (it flushes)."""
        self._stopping.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout_s + 5
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "worker pid %d did not stop in time; killing it (its job will be redelivered)", proc.pid
                )
                proc.kill()
                proc.wait()
        if self.embedded is not None:
            self.embedded.stop()
