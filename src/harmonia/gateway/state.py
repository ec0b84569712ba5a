"""What the gateway's routes share: the parts `create_app` builds, reached through `app.state.gw`."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio
from prometheus_client import CollectorRegistry, Counter, Histogram

from harmonia.config import Settings
from harmonia.engines.registry import Registry
from harmonia.gateway.auth import Authenticator
from harmonia.gateway.ratelimit import RateLimiter
from harmonia.jobs.queue import JobQueue
from harmonia.jobs.store import JobStore
from harmonia.storage import ArtifactStore
from harmonia.webhooks import WebhookNotifier


@dataclass
class GatewayState:
    settings: Settings
    store: JobStore
    queue: JobQueue
    registry: Registry
    artifacts: ArtifactStore
    auth: Authenticator
    aredis: redis.asyncio.Redis
    metrics: CollectorRegistry
    submitted: Counter
    requests: Counter
    latency: Histogram
    webhooks: WebhookNotifier
    rate_limiter: RateLimiter | None = None
    sync_waiters: int = 0  # changed only on the event loop
