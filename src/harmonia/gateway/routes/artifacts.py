"""Artifact downloads, through the gateway with auth. Only names the job recorded are served."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from harmonia.errors import NotFound
from harmonia.gateway.routes.deps import Owner, State
from harmonia.storage import check_name

router = APIRouter(tags=["artifacts"])


@router.get("/v1/jobs/{job_id}/artifacts/{name}", response_class=StreamingResponse)
async def download(job_id: str, name: str, state: State, owner: Owner) -> StreamingResponse:
    job = await run_in_threadpool(state.store.get_for, job_id, owner)
    check_name(name)
    artifact = next((a for a in job.artifacts if a.name == name), None)
    if artifact is None:
        raise NotFound(f"job {job_id} has no artifact {name!r}")
    chunks, size = await run_in_threadpool(state.artifacts.open, job.id, name)
    return StreamingResponse(
        chunks,
        media_type=artifact.content_type,
        headers={"Content-Length": str(size), "Content-Disposition": f'attachment; filename="{name}"'},
    )
