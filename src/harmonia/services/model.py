"""The model service: a synchronous HTTP API around one engine (`harmonia serve musicgen`).

`create_model_app(engine, settings)` builds the app; the engine loads in a background thread at
startup so `/healthz` answers at once and `/readyz` turns 200 when the model is loaded.

- `POST /generate`: body validated against `engine.input_model`. Answers the first artifact's bytes
  (e.g. `audio/wav`) by default; `Accept: application/json` gives JSON with base64 artifacts and the
  engine's metadata; `stream: true` in the body (or `Accept: text/event-stream`) gives Server-Sent
  Events: `progress`, engine events such as `audio_chunk`, then `result` (or `error`).
- `/healthz` liveness, `/readyz` readiness with the lifecycle (STARTING/READY/BUSY/FAILED),
  `/metrics` Prometheus from a registry of this app, `/info` engine and input schema.

Requests whose client goes away are canceled at the engine's next check.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from pydantic import ValidationError
from sse_starlette import EventSourceResponse

from harmonia import errors
from harmonia.asgi import (
    ApiError,
    BodySizeLimit,
    check_json_content_type,
    docs_app_kwargs,
    error_body,
    install_error_handlers,
    metrics_response,
    parse_json,
    serve_docs,
    status_for,
)
from harmonia.config import Settings
from harmonia.engines.base import Engine, EngineResult

log = logging.getLogger(__name__)

DEFAULT_MODEL_PORT = 8001


class Lifecycle(StrEnum):
    STARTING = "STARTING"
    READY = "READY"
    BUSY = "BUSY"
    FAILED = "FAILED"


class RequestContext:
    """`RunContext` of one HTTP request: cancel when the client leaves, time limit, event callback."""

    def __init__(
        self, timeout_s: float, on_event: Callable[[str, dict[str, Any]], None] | None = None
    ) -> None:
        self._deadline = time.monotonic() + timeout_s
        self._canceled = threading.Event()
        self._on_event = on_event

    def cancel(self) -> None:
        self._canceled.set()

    def check(self) -> None:
        if self._canceled.is_set():
            raise errors.JobCanceled("request canceled: the client went away")
        if time.monotonic() > self._deadline:
            raise errors.JobTimedOut("request ran past its time limit")

    def progress(self, fraction: float, message: str = "") -> None:
        self.check()
        self.event("progress", {"fraction": round(min(max(fraction, 0.0), 1.0), 4), "message": message})

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(kind, data)


class _Metrics:
    def __init__(self, engine: Any, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "harmonia_model_requests", "Requests to /generate", ["status"], registry=registry
        )
        self.seconds = Histogram(
            "harmonia_model_request_seconds", "Time to answer /generate", registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320),
        )  # fmt: skip
        self.inflight = Gauge("harmonia_model_inflight", "Requests being served", registry=registry)
        self.batch = Histogram(
            "harmonia_model_batch_size", "Batch size each request was served in", registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )  # fmt: skip
        self.steps = Histogram(
            "harmonia_model_steps_per_second", "Decode steps/s of the serving batch", registry=registry,
            buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
        )  # fmt: skip
        self.rtf = Histogram(
            "harmonia_model_realtime_factor", "Output seconds per wall second", registry=registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 300),
        )  # fmt: skip
        self.audio = Counter("harmonia_model_audio_seconds", "Seconds of audio produced", registry=registry)
        registry.register(_EngineStats(engine))

    def observe(self, output: dict[str, Any]) -> None:
        for key, metric in (
            ("batch_size", self.batch),
            ("steps_per_s", self.steps),
            ("realtime_factor", self.rtf),
        ):
            if isinstance(output.get(key), int | float):
                metric.observe(float(output[key]))
        if isinstance(output.get("generated_s", output.get("duration_s")), int | float):
            self.audio.inc(float(output.get("generated_s", output.get("duration_s"))))


class _EngineStats:
    """Exposes `engine.stats()` (if the engine has it) as gauges at scrape time."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = getattr(self.engine, "stats", None)
        if stats is None:
            return
        for key, value in stats().items():
            g = GaugeMetricFamily(f"harmonia_engine_{key}", f"engine counter {key}")
            g.add_metric([], float(value))
            yield g


class _Service:
    """Per-app state: lifecycle, in-flight count, metrics."""

    def __init__(self, engine: Any, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.loaded = not hasattr(engine, "load")
        self.error: str | None = None
        self.inflight = 0
        self.lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.metrics = _Metrics(engine, self.registry)
        self.limiter = anyio.CapacityLimiter(settings.max_sync_waiters)
        state = Gauge(
            "harmonia_model_state", "1 for the current lifecycle state", ["state"], registry=self.registry
        )
        for s in Lifecycle:
            state.labels(s.value).set_function(lambda s=s: 1.0 if self.state == s else 0.0)

    @property
    def state(self) -> Lifecycle:
        if self.error is not None:
            return Lifecycle.FAILED
        if not self.loaded:
            return Lifecycle.STARTING
        return Lifecycle.BUSY if self.inflight else Lifecycle.READY

    def load(self, on_failure: Callable[[BaseException], None] | None) -> None:
        try:
            self.engine.load()
        except Exception as exc:  # noqa: BLE001 - any load failure ends as FAILED with its reason
            self.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.error("model failed to load: %s", self.error)
            if on_failure is not None:
                on_failure(exc)
            return
        self.loaded = True
        log.info("model loaded; service ready")


def create_model_app(
    engine: Engine, settings: Settings, *, on_load_failure: Callable[[BaseException], None] | None = None
) -> FastAPI:
    """The HTTP service around one engine. `on_load_failure` is called (from the loading thread)
    if the engine's `load()` fails; `serve_model` uses it to stop the server."""
    svc = _Service(engine, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not svc.loaded:
            threading.Thread(target=svc.load, args=(on_load_failure,), name="model-load", daemon=True).start()
        yield
        close = getattr(engine, "close", None)
        if close is not None:
            await anyio.to_thread.run_sync(close)

    app = FastAPI(title=f"harmonia {engine.name} service", lifespan=lifespan, **docs_app_kwargs())
    app.state.service = svc
    install_error_handlers(app)
    serve_docs(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "state": svc.state.value}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        state = svc.state
        if state in (Lifecycle.READY, Lifecycle.BUSY):
            return JSONResponse({"status": "ready", "state": state.value})
        message = f"model failed to load: {svc.error}" if svc.error else "model is loading"
        body = error_body("not_ready", message)
        body["state"] = state.value
        return JSONResponse(body, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return metrics_response(svc.registry)

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {
            "engine": engine.name,
            "state": svc.state.value,
            "error": svc.error,
            "info": engine.info(),
            "input_schema": engine.input_model.model_json_schema(),
        }

    @app.post("/generate", openapi_extra={"requestBody": {"content": {"application/json": {"schema": {}}}}})
    async def generate(request: Request) -> Response:
        if svc.state not in (Lifecycle.READY, Lifecycle.BUSY):
            msg = f"model failed to load: {svc.error}" if svc.error else "model is still loading"
            raise ApiError(503, "not_ready", msg, headers={"Retry-After": "5"})
        payload = await _parse(request, engine)
        accept = request.headers.get("accept", "")
        if getattr(payload, "stream", False) or "text/event-stream" in accept:
            return EventSourceResponse(_stream(svc, payload))
        ctx = RequestContext(settings.job_timeout_s)
        result = await _run(svc, payload, ctx, request)
        return _answer(result, accept)

    return app


async def _parse(request: Request, engine: Engine) -> Any:
    check_json_content_type(request)
    body = parse_json(await request.body())
    try:
        return engine.input_model.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from exc


async def _run(svc: _Service, payload: Any, ctx: RequestContext, request: Request | None) -> EngineResult:
    """Run the engine in a worker thread; cancel the request's context if the client leaves."""
    t0 = time.monotonic()
    with svc.lock:
        svc.inflight += 1
    svc.metrics.inflight.inc()
    status = "500"
    try:
        task = asyncio.ensure_future(
            anyio.to_thread.run_sync(svc.engine.run, payload, ctx, limiter=svc.limiter)
        )
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if request is not None and not task.done() and await request.is_disconnected():
                ctx.cancel()
        try:
            result = task.result()
        except errors.HarmoniaError as exc:  # the app's error handlers answer it; count it here
            status = str(status_for(exc))
            raise
        status = "200"
        svc.metrics.observe(result.output)
        return result
    finally:
        with svc.lock:
            svc.inflight -= 1
        svc.metrics.inflight.dec()
        svc.metrics.requests.labels(status).inc()
        svc.metrics.seconds.observe(time.monotonic() - t0)


def _result_json(result: EngineResult) -> dict[str, Any]:
    arts = [
        {"name": a.name, "content_type": a.content_type, "data_b64": base64.b64encode(a.data).decode("ascii")}
        for a in result.artifacts
    ]
    body: dict[str, Any] = {"output": result.output, "artifacts": arts}
    audio = next((a for a in arts if a["content_type"].startswith("audio/")), None)
    if audio is not None:
        body["audio_b64"], body["content_type"] = audio["data_b64"], audio["content_type"]
    return body


def _answer(result: EngineResult, accept: str) -> Response:
    wants_json = "application/json" in accept and not any(
        t in accept for t in ("audio/", "application/octet-stream")
    )
    if wants_json or not result.artifacts:
        return JSONResponse(_result_json(result))
    art = result.artifacts[0]
    headers = {
        f"X-Harmonia-{k.replace('_', '-').title()}": str(v)
        for k, v in result.output.items()
        if isinstance(v, int | float | str) and not isinstance(v, bool) and len(str(v)) < 200
    }
    headers["Content-Disposition"] = f'inline; filename="{art.name}"'
    return Response(art.data, media_type=art.content_type, headers=headers)


async def _stream(svc: _Service, payload: Any) -> AsyncIterator[dict[str, str]]:
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def on_event(kind: str, data: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (kind, data))

    ctx = RequestContext(svc.settings.job_timeout_s, on_event)
    task = asyncio.ensure_future(_run(svc, payload, ctx, None))
    try:
        while True:
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                kind, data = getter.result()
                yield {"event": kind, "data": json.dumps(data)}
                continue
            getter.cancel()
            while not events.empty():
                kind, data = events.get_nowait()
                yield {"event": kind, "data": json.dumps(data)}
            break
        try:
            yield {"event": "result", "data": json.dumps(_result_json(task.result()))}
        except ApiError as exc:
            yield {"event": "error", "data": json.dumps(error_body(exc.code, exc.message, exc.field))}
        except errors.HarmoniaError as exc:
            yield {
                "event": "error",
                "data": json.dumps(error_body(exc.code, exc.message or str(exc), exc.field)),
            }
    finally:
        if not task.done():  # the client went away mid-stream
            ctx.cancel()


SERVED = ("musicgen", "acestep", "stable-audio", "diffsinger")


def build_served_engine(engine_name: str, settings: Settings) -> Engine:
    """The engine `harmonia serve <engine_name>` serves: the registry's, always loaded here (a
    service never forwards to another service). Raises EngineUnavailable with one clear line for an
    unknown name, a missing extra or a checkpoint/voicebank that cannot be what it should be."""
    from harmonia.engines.registry import Registry

    if engine_name not in SERVED:
        known = ", ".join(SERVED)
        raise errors.EngineUnavailable(f"no model service for {engine_name!r} (known: {known})")
    local = settings.model_copy(update={f"{engine_name.replace('-', '_')}_url": None})
    return Registry(local).engine(engine_name)


def serve_model(
    engine_name: str, settings: Settings, host: str | None = None, port: int | None = None
) -> None:
    """Run `harmonia serve <engine_name>` until stopped. Raises EngineUnavailable if the engine
    cannot be built or its model fails to load (the server stops itself in that case)."""
    import uvicorn

    engine = build_served_engine(engine_name, settings)
    failures: list[BaseException] = []
    holder: dict[str, uvicorn.Server] = {}

    def on_failure(exc: BaseException) -> None:
        failures.append(exc)
        if "server" in holder:
            holder["server"].should_exit = True

    app = create_model_app(engine, settings, on_load_failure=on_failure)
    config = uvicorn.Config(
        app, host=host or settings.host, port=DEFAULT_MODEL_PORT if port is None else port,
        log_level=settings.log_level.lower(),
    )  # fmt: skip
    holder["server"] = server = uvicorn.Server(config)
    server.run()
    if failures:
        exc = failures[0]
        raise errors.EngineUnavailable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
