"""`GET /v1/models`: what can be run here, on which queue, with which input schema, and why not."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from harmonia.errors import DependencyDown
from harmonia.gateway.routes.deps import Owner, State

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(state: State, _: Owner) -> dict[str, Any]:
    models = await run_in_threadpool(state.registry.describe)
    for entry in models:
        try:
            entry["queue_depth"] = await run_in_threadpool(state.queue.depth, entry["queue"])
        except (DependencyDown, OSError):
            entry["queue_depth"] = None
    return {"models": models}
