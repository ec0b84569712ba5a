"""Redis connections with timeouts, so an unreachable server gives an error, never a hang."""

from __future__ import annotations

import redis
import redis.asyncio


def connect(url: str, *, pool_size: int = 64) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=3,
        socket_timeout=10,
        health_check_interval=30,
        max_connections=pool_size,
        retry_on_timeout=False,
    )


def connect_async(url: str, *, pool_size: int = 256) -> redis.asyncio.Redis:
    """For the gateway's waits (SSE, sync jobs): blocking reads with their own socket timeouts."""
    return redis.asyncio.Redis.from_url(
        url, socket_connect_timeout=3, socket_timeout=None, max_connections=pool_size
    )
