"""`harmonia serve ollama`: the LLM helper tasks as a small HTTP service in front of a daemon.

Routes: `POST /v1/enhance_prompt`, `/v1/song_plan`, `/v1/lyrics` (the `ollama` engine's tasks,
answered synchronously), `/healthz` (the process answers), `/readyz` (the daemon answers and has
the model), `/metrics` (Prometheus), `/info`. Errors use the shared envelope (`harmonia.asgi`):
daemon down -> 503 naming the URL tried, model missing -> 503 naming the models the server serves,
huge prompt -> 422 naming the field (413 for a body over `max_body_bytes`), daemon too slow or the
task's time budget spent -> 504, an answer still invalid after the repair, a prompt longer than
the model's context or a daemon failing mid-answer -> 502.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram

from harmonia import __version__
from harmonia.asgi import BodySizeLimit, error_response, install_error_handlers, metrics_response
from harmonia.config import Settings
from harmonia.engines.base import LocalContext
from harmonia.engines.ollama.engine import (
    EnhancePromptInput,
    LyricsInput,
    OllamaEngine,
    SongPlanInput,
    build_ollama_engine,
)
from harmonia.errors import DependencyDown, EngineError, EngineUnavailable, HarmoniaError, RetryableError


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "harmonia_llm_requests",
            "LLM helper requests by task and outcome",
            ["task", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "harmonia_llm_request_seconds",
            "Time to answer an LLM helper request",
            ["task"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self.tokens = Counter(
            "harmonia_llm_tokens",
            "Tokens the daemon reported, by task and kind",
            ["task", "kind"],
            registry=registry,
        )
        self.repairs = Counter(
            "harmonia_llm_repairs", "Answers that needed the one repair request", ["task"], registry=registry
        )


def create_llm_app(
    engine: OllamaEngine,
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> FastAPI:
    """The HTTP app around an `OllamaEngine`. `on_shutdown` runs when the server stops."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(title="Harmonia LLM helper", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    metrics = _Metrics(registry or CollectorRegistry())

    def run(task: EnhancePromptInput | SongPlanInput | LyricsInput) -> dict[str, Any]:
        started = time.perf_counter()
        outcome = "ok"
        try:
            result = engine.run(task, LocalContext())
        except HarmoniaError as exc:  # the app's error handlers answer it (asgi.STATUS_FOR)
            outcome = exc.code
            raise
        finally:
            metrics.requests.labels(task.task, outcome).inc()
            metrics.seconds.labels(task.task).observe(time.perf_counter() - started)
        stats = result.output.get("stats") or {}
        for kind in ("prompt_tokens", "completion_tokens"):
            if isinstance(stats.get(kind), int):
                metrics.tokens.labels(task.task, kind.removesuffix("_tokens")).inc(stats[kind])
        if result.output.get("attempts", 1) > 1:
            metrics.repairs.labels(task.task).inc()
        return result.output

    @app.post("/v1/enhance_prompt")
    def enhance_prompt(body: EnhancePromptInput) -> dict[str, Any]:
        """A short idea -> a rich MusicGen prompt with its genre, instruments, tempo, mood, production."""
        return run(body)

    @app.post("/v1/song_plan")
    def song_plan(body: SongPlanInput) -> dict[str, Any]:
        """Instructions -> a validated SongPlan (repaired once if the model's first answer is invalid)."""
        return run(body)

    @app.post("/v1/lyrics")
    def lyrics(body: LyricsInput) -> dict[str, Any]:
        """Theme + section names -> lyric lines per section with syllable counts."""
        return run(body)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=None)
    def readyz() -> dict[str, Any] | JSONResponse:
        try:
            info = engine.check_ready()
        except (DependencyDown, EngineUnavailable, RetryableError, EngineError) as exc:
            return error_response(503, exc.code, str(exc))
        return {"status": "ready", **info}

    @app.get("/metrics")
    def metrics_endpoint() -> Any:
        return metrics_response(metrics.registry)

    @app.get("/info")
    def info() -> dict[str, Any]:
        return engine.info()

    return app


def build_llm_app(settings: Settings) -> FastAPI:
    """What `harmonia serve ollama` runs: the client and engine `settings.ollama` describes."""
    engine = build_ollama_engine(settings.ollama)
    return create_llm_app(engine, settings, on_shutdown=engine.client.close)
