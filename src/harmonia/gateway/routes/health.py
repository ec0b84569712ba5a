"""Liveness (`/healthz`: the process answers), readiness (`/readyz`: Redis answers), metrics."""

from __future__ import annotations

from typing import Any

import anyio
import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from harmonia.asgi import error_response, metrics_response
from harmonia.gateway.routes.deps import State

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: State) -> JSONResponse:
    try:
        with anyio.fail_after(2.0):
            await state.aredis.ping()
    except (TimeoutError, redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
        return error_response(503, "dependency_down", f"redis unreachable: {reason}")
    return JSONResponse({"status": "ready", "redis": "ok", "artifacts": state.artifacts.describe()})


@router.get("/metrics", include_in_schema=False)
def metrics(state: State) -> Response:
    return metrics_response(state.metrics)
