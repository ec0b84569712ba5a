"""Shared fixtures: a real embedded Valkey, settings pointing at it, a real uvicorn gateway in a
thread and an in-process worker. Helpers (servers, subprocess workers) are in helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harmonia.config import Settings
from harmonia.embedded import EmbeddedValkey
from harmonia.redis_client import connect
from helpers import ServerThread, make_gateway


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("HARMONIA_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(valkey: EmbeddedValkey) -> str:
    connect(valkey.url).flushall()
    return valkey.url


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    """Production defaults, pointed at the suite's Valkey and a fresh data dir."""
    return Settings(redis_url=redis_url, data_dir=tmp_path / "data")


@pytest.fixture
def gateway(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(make_gateway(settings)) as server:
        yield server


@pytest.fixture
def worker(settings: Settings) -> Iterator[Any]:
    from harmonia.worker import WorkerProcess

    assert settings.redis_url
    proc = WorkerProcess(settings, connect(settings.redis_url))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def http(gateway: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client
