"""`harmonia up`'s process group: the embedded Valkey (unless a Redis URL is set) and worker
subprocesses, restarted if one dies or wedges. The gateway runs in the calling process.

Workers run as separate processes so an engine crash, or a SIGKILL, takes down one worker and not
the gateway; Dramatiq redelivers what a dead worker held.

One `harmonia up` at a time owns a data dir: it holds an exclusive lock on `<data_dir>/harmonia.lock`
(released by the kernel however the process ends), and a second one refuses to start, naming the
first, before it touches anything.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harmonia.config import Settings
from harmonia.embedded import EmbeddedValkey
from harmonia.errors import HarmoniaError
from harmonia.worker import liveness_age

log = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if `harmonia up` itself dies, so no worker outlives it."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class DataDirInUse(HarmoniaError):
    """Another live `harmonia up` owns this data dir."""


class DataDirLock:
    """An exclusive, non-blocking `flock` on `<data_dir>/harmonia.lock`, holding the owner's pid and
    address so a second instance can say who holds it. The kernel drops the lock when the owner's
    process ends, even by SIGKILL, so a stale file never blocks a restart."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "harmonia.lock"
        self._fd: int | None = None

    def acquire(self, owner: dict[str, object]) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096)
            os.close(fd)
            raise DataDirInUse(self._describe(holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        self._fd = fd

    def _describe(self, raw: bytes) -> str:
        try:
            holder = json.loads(raw)
            who = f"pid {holder['pid']}, gateway on {holder['host']}:{holder['port']}"
        except (ValueError, KeyError, TypeError):
            who = "a process that is still starting"
        return (
            f"{self.path.parent} is in use by another `harmonia up` ({who}); stop it first, "
            "or give this one another --data-dir"
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the file stays (it is harmless)
            self._fd = None


class Supervisor:
    def __init__(self, settings: Settings, workers: int = 1) -> None:
        self.settings = settings
        self.n_workers = max(0, workers)
        self.lock = DataDirLock(settings.data_dir)
        self.embedded: EmbeddedValkey | None = None
        self.redis_url: str | None = settings.redis_url
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._watchdog, name="worker-watchdog", daemon=True)

    def start(self) -> str:
        """Take the data dir, start Valkey (embedded) and the workers. Raises DataDirInUse, having
        touched nothing, when another instance owns the data dir."""
        self.lock.acquire({"pid": os.getpid(), "host": self.settings.host, "port": self.settings.port})
        if not self.redis_url:
            self.embedded = EmbeddedValkey(
                self.settings.data_dir, appendfsync=self.settings.embedded_appendfsync
            )
            self.redis_url = self.embedded.start()
        for i in range(self.n_workers):
            self.procs.append(self._spawn(i))
        if not self.procs:
            log.warning("no workers started (--workers 0): jobs wait for workers started elsewhere")
        self._watch.start()
        return self.redis_url

    def liveness_file(self, index: int) -> Path:
        return self.settings.data_dir / "run" / f"worker-{index}.alive"

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["HARMONIA_REDIS_URL"] = self.redis_url or ""
        env["HARMONIA_DATA_DIR"] = str(self.settings.data_dir)
        env["HARMONIA_WORKER_THREADS"] = str(self.settings.worker_threads)
        alive = self.liveness_file(index)
        alive.unlink(missing_ok=True)
        env["HARMONIA_WORKER_LIVENESS_FILE"] = str(alive)
        proc = subprocess.Popen(
            [sys.executable, "-m", "harmonia", "worker"], env=env, preexec_fn=_die_with_parent
        )
        log.info("worker %d started (pid %d)", index, proc.pid)
        return proc

    def _watchdog(self) -> None:
        """Restart a worker that exited, or that stopped touching its liveness file (wedged; the
        grace covers its start-up before the first touch)."""
        started = {i: time.monotonic() for i in range(len(self.procs))}
        limit = self.settings.worker_liveness_max_age_s
        while not self._stopping.wait(1.0):
            for i, proc in enumerate(self.procs):
                if self._stopping.is_set():
                    return
                if proc.poll() is not None:
                    log.warning("worker %d (pid %d) exited with %s; restarting", i, proc.pid, proc.returncode)
                else:
                    age = liveness_age(self.liveness_file(i))
                    if age is None:
                        age = time.monotonic() - started[i]  # not touched yet: count from the start
                    if age <= limit:
                        continue
                    log.warning("worker %d (pid %d) wedged for %.0f s; restarting", i, proc.pid, age)
                    proc.kill()
                    proc.wait()
                self.procs[i] = self._spawn(i)
                started[i] = time.monotonic()

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
        self.lock.release()
