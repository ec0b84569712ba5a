"""Per-API-key submission rate limit (moving window, counted in Redis so every gateway replica
shares it). Over the limit: 429 with Retry-After."""

from __future__ import annotations

import math
import time

import redis
from limits import parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from harmonia.asgi import ApiError
from harmonia.errors import DependencyDown


class RateLimiter:
    def __init__(self, spec: str, redis_url: str) -> None:
        self.item = parse(spec)
        self.spec = spec
        self.limiter = MovingWindowRateLimiter(RedisStorage(redis_url, key_prefix="harmonia:rl"))

    def check(self, owner: str) -> None:
        try:
            if self.limiter.hit(self.item, "submit", owner):
                return
            stats = self.limiter.get_window_stats(self.item, "submit", owner)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise DependencyDown(f"redis unreachable: {exc}") from exc
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise ApiError(
            429,
            "rate_limited",
            f"more than {self.spec} job submissions for this API key; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
