"""`create_app(settings, ...)`: the gateway's FastAPI application, built from the parts passed in."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Histogram

from harmonia import __version__
from harmonia.config import Settings
from harmonia.engines.registry import Registry
from harmonia.gateway.auth import Authenticator
from harmonia.gateway.metrics import QueueDepthCollector
from harmonia.gateway.ratelimit import RateLimiter
from harmonia.jobs.queue import JobQueue
from harmonia.jobs.runner import LeaseKeeper, Runner
from harmonia.jobs.store import JobStore
from harmonia.storage import ArtifactStore, build_store
from harmonia.web import BodySizeLimit, install_error_handlers

log = logging.getLogger(__name__)


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
    runner: Runner
    leases: LeaseKeeper
    rate_limiter: RateLimiter | None = None


def create_app(
    settings: Settings,
    client: redis.Redis,
    aclient: redis.asyncio.Redis,
    *,
    registry: Registry | None = None,
    artifacts: ArtifactStore | None = None,
) -> FastAPI:
    """The gateway app. `client` / `aclient` are sync and async connections to the same Redis."""
    from harmonia.gateway.routes import artifacts as artifact_routes
    from harmonia.gateway.routes import console, health, jobs, models

    registry = registry or Registry(settings)
    queues = sorted({spec.queue for spec in registry.specs.values()})
    metrics = CollectorRegistry()
    store = JobStore(
        client,
        events_maxlen=settings.events_maxlen,
        result_ttl_s=settings.result_ttl_s,
        lease_s=settings.lease_s,
    )
    queue = JobQueue(settings, client, queues)
    artifacts = artifacts or build_store(settings)
    # sync jobs for a model with a service URL are run here, directly against that service
    leases = LeaseKeeper(store, interval_s=max(settings.lease_s / 3, 0.2))
    state = GatewayState(
        settings=settings,
        store=store,
        queue=queue,
        registry=registry,
        artifacts=artifacts,
        auth=Authenticator(settings),
        aredis=aclient,
        metrics=metrics,
        submitted=Counter("harmonia_jobs_submitted", "Jobs accepted", ["model", "mode"], registry=metrics),
        requests=Counter(
            "harmonia_http_requests", "HTTP requests", ["method", "route", "status"], registry=metrics
        ),
        latency=Histogram(
            "harmonia_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
            registry=metrics,
        ),
        runner=Runner(settings, store, queue, registry, artifacts, leases),
        leases=leases,
        rate_limiter=RateLimiter(settings.rate_limit, settings.redis_url)
        if settings.rate_limit and settings.redis_url
        else None,
    )
    metrics.register(QueueDepthCollector(client, queues))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        if state.auth.open:
            log.warning(
                "no API keys configured: the gateway is open to anyone who can reach %s", settings.host
            )
        yield
        await aclient.aclose()

    app = FastAPI(
        title="Harmonia",
        version=__version__,
        description="Jobs API for music-generation models. Async jobs are queued; sync jobs wait.",
        lifespan=lifespan,
    )
    app.state.gw = state
    install_error_handlers(app)

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        state.latency.labels(path).observe(time.perf_counter() - started)
        state.requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_router(jobs.router)
    app.include_router(artifact_routes.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(console.router)

    return app
