"""`create_app(settings, ...)`: the gateway's FastAPI application, built from the parts passed in."""

from __future__ import annotations

import gc
import logging
import os
import time
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harmonia import __version__
from harmonia.asgi import BodySizeLimit, docs_app_kwargs, error_responses, install_error_handlers, serve_docs
from harmonia.config import Settings
from harmonia.engines.registry import Registry
from harmonia.gateway.auth import Authenticator
from harmonia.gateway.metrics import QueueDepthCollector
from harmonia.gateway.ratelimit import RateLimiter
from harmonia.gateway.routes import artifacts as artifact_routes
from harmonia.gateway.routes import console, health, jobs, models
from harmonia.gateway.state import GatewayState
from harmonia.jobs.queue import JobQueue
from harmonia.jobs.store import JobStore
from harmonia.storage import ArtifactStore, build_store
from harmonia.webhooks import WebhookNotifier

log = logging.getLogger(__name__)


class ObserveRequests:
    """Plain ASGI middleware (cheaper than BaseHTTPMiddleware): request count and time to headers
    per route template."""

    def __init__(self, app: ASGIApp, latency: Histogram, requests: Counter) -> None:
        self.app, self.latency, self.requests = app, latency, requests
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # labels() looked up once

    def _metrics(self, method: str, path: str, status: int) -> tuple[Any, Any]:
        key = (method, path, status)
        child = self._children.get(key)
        if child is None:
            child = (self.latency.labels(path), self.requests.labels(method, path, str(status)))
            self._children[key] = child
        return child

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                path = getattr(scope.get("route"), "path", "unmatched")
                latency, count = self._metrics(scope["method"], path, message["status"])
                latency.observe(time.perf_counter() - started)
                count.inc()
            await send(message)

        await self.app(scope, receive, observed)


def create_app(
    settings: Settings,
    client: redis.Redis,
    aclient: redis.asyncio.Redis,
    *,
    registry: Registry | None = None,
    artifacts: ArtifactStore | None = None,
) -> FastAPI:
    """The gateway app. `client` / `aclient` are sync and async connections to the same Redis."""
    registry = registry or Registry(settings)
    queues = sorted({spec.queue for spec in registry.specs.values()})
    metrics = CollectorRegistry()
    store = JobStore(
        client,
        aclient=aclient,
        events_maxlen=settings.events_maxlen,
        result_ttl_s=settings.result_ttl_s,
        lease_s=settings.lease_s,
    )
    queue = JobQueue(settings, client, queues)
    artifacts = artifacts or build_store(settings)
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
        webhooks=WebhookNotifier(settings, store),
        rate_limiter=RateLimiter(settings.rate_limit, settings.redis_url)
        if settings.rate_limit and settings.redis_url
        else None,
    )
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # several gateway processes (`harmonia gateway --workers N`): the counters above write to the
        # shared folder, and /metrics answers with every process's values added up
        from prometheus_client import multiprocess

        state.metrics = CollectorRegistry()
        multiprocess.MultiProcessCollector(state.metrics)
    state.metrics.register(QueueDepthCollector(queue, queues))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        # Everything built so far (the app, models, schemas) lives as long as the process: keep it
        # out of the garbage collector's generations, so the collections that run under load walk
        # only what requests allocate (shorter pauses, a shorter latency tail).
        registry.warm()  # imports and patterns now, not in the first requests' latency
        gc.freeze()
        if state.auth.open:
            log.warning(
                "no API keys configured: the gateway is open to anyone who can reach %s", settings.host
            )
        yield
        await aclient.aclose()
        state.webhooks.close()  # lets webhook deliveries already handed over finish

    app = FastAPI(
        title="Harmonia",
        version=__version__,
        description="Jobs API for music-generation models. Async jobs are queued; sync jobs wait.",
        lifespan=lifespan,
        **docs_app_kwargs(),
    )
    app.state.gw = state
    install_error_handlers(app)
    serve_docs(app)

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ObserveRequests, latency=state.latency, requests=state.requests)
    api_errors = error_responses(401, 404, 409, 413, 422, 429, 503)
    app.include_router(jobs.router, responses=api_errors)
    app.include_router(artifact_routes.router, responses=api_errors)
    app.include_router(models.router, responses=api_errors)
    app.include_router(health.router)
    app.include_router(console.router)

    return app


def app_from_env() -> FastAPI:
    """The gateway app built from `HARMONIA_*` in the environment: the factory each process runs
    under `harmonia gateway --workers N` (uvicorn imports it by name in every worker process)."""
    from harmonia.redis_client import connect, connect_async

    settings = Settings()
    if not settings.redis_url:
        raise RuntimeError("HARMONIA_REDIS_URL is not set")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return create_app(settings, connect(settings.redis_url), connect_async(settings.redis_url))
