"""Test helpers shared by the suite (imported as `helpers`; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import uvicorn

from harmonia.config import Settings
from harmonia.redis_client import connect, connect_async

FAST = {
    "heartbeat_timeout_ms": 3000,
    "maintenance_chance": 1_000_000,
    "lease_s": 2.0,
    "min_backoff_ms": 100,
    "max_backoff_ms": 500,
    "result_ttl_s": 3600,
    "worker_threads": 2,
    "sync_timeout_s": 20.0,
    "shutdown_timeout_s": 20.0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A real uvicorn server on a free loopback port, in a thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def make_gateway(settings: Settings) -> Any:
    from harmonia.gateway import create_app

    assert settings.redis_url
    return create_app(settings, connect(settings.redis_url), connect_async(settings.redis_url))


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARMONIA_")}
    env.update(
        HARMONIA_REDIS_URL=settings.redis_url or "",
        HARMONIA_DATA_DIR=str(settings.data_dir),
        HARMONIA_HEARTBEAT_TIMEOUT_MS=str(settings.heartbeat_timeout_ms),
        HARMONIA_MAINTENANCE_CHANCE=str(settings.maintenance_chance),
        HARMONIA_LEASE_S=str(settings.lease_s),
        HARMONIA_MIN_BACKOFF_MS=str(settings.min_backoff_ms),
        HARMONIA_MAX_BACKOFF_MS=str(settings.max_backoff_ms),
        HARMONIA_WORKER_THREADS=str(settings.worker_threads),
        HARMONIA_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def spawn_worker(settings: Settings, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "harmonia", "worker", *args], env=worker_env(settings, **env)
    )


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


class RecordingContext:
    """A RunContext for engine tests: records progress and events, cancels after `cancel_after`
    checks. Subclasses set `check_on_progress` when progress should also count as a check."""

    check_on_progress = False

    def __init__(self, cancel_after: int | None = None) -> None:
        self.cancel_after = cancel_after
        self.checks = 0
        self.progress_calls: list[tuple[float, str]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    def progress(self, fraction: float, message: str = "") -> None:
        self.progress_calls.append((fraction, message))
        if self.check_on_progress:
            self.check()

    def check(self) -> None:
        from harmonia.errors import JobCanceled

        self.checks += 1
        if self.cancel_after is not None and self.checks > self.cancel_after:
            raise JobCanceled("canceled by test")

    def event(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))
