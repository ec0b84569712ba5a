"""Fixtures of the fault suite: a cluster of real `harmonia` subprocesses on the suite's Valkey."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fault_cluster import Cluster

from harmonia.config import Settings
from harmonia.redis_client import connect


@pytest.fixture
def cluster(settings: Settings, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(settings, tmp_path / "logs")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def rclient(settings: Settings) -> redis.Redis:
    assert settings.redis_url
    return connect(settings.redis_url)
