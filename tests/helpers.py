"""Test helpers shared by the suite (imported as `helpers`; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import BaseModel, SecretStr

from harmonia.config import Settings
from harmonia.redis_client import connect, connect_async

#: Short recovery timings for the tests that kill, cut off or stall a worker and wait for its jobs
#: to be taken over: with the defaults (a 60 s heartbeat, a 30 s lease) each such test would wait
#: a minute and a half. Only those tests pass it, explicitly; the rest of the suite runs on the
#: production defaults.
SHORT_RECOVERY = {"heartbeat_timeout_ms": 3000, "lease_s": 2.0}


def short_recovery(settings: Settings) -> Settings:
    """Set SHORT_RECOVERY on `settings` (and on every subprocess started with them)."""
    for name, value in SHORT_RECOVERY.items():
        setattr(settings, name, value)
    return settings


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


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return ",".join(_env_value(v) for v in value)
    return str(value)


def settings_env(settings: Settings) -> dict[str, str]:
    """The `HARMONIA_*` variables that give a subprocess the same settings: every field the test set
    (given to the constructor or assigned later), nested groups with `__`. Everything else stays at
    its default there too."""
    env: dict[str, str] = {}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        if isinstance(value, BaseModel):
            for sub in value.model_fields_set:
                if (inner := getattr(value, sub)) is not None:
                    env[f"HARMONIA_{name.upper()}__{sub.upper()}"] = _env_value(inner)
        elif value is not None:
            env[f"HARMONIA_{name.upper()}"] = _env_value(value)
    return env


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARMONIA_")}
    env.update(settings_env(settings), HARMONIA_LOG_LEVEL="WARNING")
    env.update(extra)
    return env


def spawn_worker(settings: Settings, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "harmonia", "worker", *args], env=worker_env(settings, **env)
    )


def harmonia_up(data_dir: Path, port: int, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """`harmonia up` on its own data dir and port, as a user would start it (default settings)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("HARMONIA_")}
    full.update(HARMONIA_LOG_LEVEL="WARNING", **env)
    return subprocess.Popen(
        [sys.executable, "-m", "harmonia", "up", "--port", str(port), "--data-dir", str(data_dir), *args],
        env=full,
    )


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


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
