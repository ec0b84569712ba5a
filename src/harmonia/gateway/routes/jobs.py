"""Jobs: submit (async or sync), get, list, cancel, events (SSE). Plus the original `/job` shape."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from harmonia.asgi import JsonBody, JsonRoute
from harmonia.errors import Conflict, InvalidInput
from harmonia.gateway.routes.deps import Owner, State
from harmonia.gateway.sse import follow, wait_finished
from harmonia.gateway.state import GatewayState
from harmonia.jobs.models import Job, JobRequest, JobState, job_view
from harmonia.jobs.store import Cancel, new_job_id
from harmonia.webhooks import check_webhook_url

router = APIRouter(tags=["jobs"], route_class=JsonRoute)

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


async def _submit(state: GatewayState, req: JobRequest, owner: str, idem: str | None) -> Job:
    """Check, record and enqueue a job: the record, its indexes and its message are written in one
    atomic round trip, so there is never a record without a message (nor the other way round)."""
    if state.rate_limiter is not None:
        await run_in_threadpool(state.rate_limiter.check, owner)
    spec = state.registry.spec(req.model)
    payload = state.registry.validate(req.model, req.payload)
    settings = state.settings
    timeout = req.timeout_s or settings.job_timeout_s
    if timeout > settings.max_job_timeout_s:
        raise InvalidInput(f"timeout_s: at most {settings.max_job_timeout_s:g} s", "timeout_s")
    if req.webhook_url:  # resolves the host: off the event loop
        allow = settings.webhook_allow_private
        await run_in_threadpool(check_webhook_url, req.webhook_url, allow_private=allow)
    job = Job(
        id=new_job_id(),
        model=req.model,
        queue=spec.queue,
        mode=req.mode,
        owner=owner,
        payload=payload,
        priority=req.priority,
        timeout_s=timeout,
        webhook_url=req.webhook_url,
    )
    request_hash = hashlib.sha256(req.model_dump_json().encode()).hexdigest() if idem else ""
    # Every job runs on a worker, sync ones too: a worker holds its lease for as long as it runs and
    # its recovery is bounded. A sync job goes to the head of its queue (its caller is waiting) and
    # the queue's doorbell wakes an idle worker at once.
    message = state.queue.outgoing(spec.queue, job.id, job.timeout_s, front=req.mode == "sync")
    job, created = await state.store.acreate(job, idem, request_hash, message)
    if created:
        state.submitted.labels(req.model, req.mode).inc()
    return job


async def submit(
    state: GatewayState, req: JobRequest, owner: str, idem: str | None, legacy: bool
) -> Response:
    job = await _submit(state, req, owner, idem)
    # each sync waiter holds a Redis connection; past the cap a sync job answers 202 at once
    if req.mode == "sync" and not job.finished and state.sync_waiters < state.settings.max_sync_waiters:
        state.sync_waiters += 1
        try:
            await wait_finished(state.aredis, job.id, state.settings.sync_timeout_s)
        finally:
            state.sync_waiters -= 1
        job = await state.store.aget_for(job.id, owner)
    status = 200 if req.mode == "sync" and job.finished else 202
    headers = {"Location": f"/v1/jobs/{job.id}"}
    return JsonBody(job_view(job, legacy=legacy), status_code=status, headers=headers)


@router.post(
    "/v1/jobs",
    status_code=202,
    responses={200: {"description": "sync job finished within the wait"}, 202: {"description": "accepted"}},
)
async def create_job(
    req: JobRequest, state: State, owner: Owner, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Submit a job. `async` answers 202 at once; `sync` waits up to the gateway's sync limit and
    answers 200 with the result, or 202 with the job's link if it is still running."""
    return await submit(state, req, owner, idempotency_key, legacy=False)


@router.post("/job", status_code=202, summary="Submit a job (original API shape)")
async def create_job_legacy(
    req: JobRequest, state: State, owner: Owner, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    return await submit(state, req, owner, idempotency_key, legacy=True)


@router.get("/v1/jobs/{job_id}", response_model=dict[str, Any])
async def get_job(job_id: str, state: State, owner: Owner) -> Response:
    return JsonBody(job_view(await state.store.aget_for(job_id, owner)))


@router.get("/job/{job_id}", summary="Get a job (original API shape)", response_model=dict[str, Any])
async def get_job_legacy(job_id: str, state: State, owner: Owner) -> Response:
    return JsonBody(job_view(await state.store.aget_for(job_id, owner), legacy=True))


@router.get("/v1/jobs")
def list_jobs(
    state: State,
    owner: Owner,
    status: JobState | None = None,
    model: str | None = Query(None, max_length=64),
    cursor: str | None = Query(None, max_length=512),
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    """The caller's jobs, newest first. Pass `next_cursor` back as `cursor` for the next page."""
    jobs, next_cursor = state.store.list(owner, status=status, model=model, limit=limit, cursor=cursor)
    return {"jobs": [job_view(j) for j in jobs], "next_cursor": next_cursor}


@router.post("/v1/jobs/{job_id}/cancel")
def cancel_job(job_id: str, state: State, owner: Owner) -> JSONResponse:
    """Queued jobs never run; running jobs stop at the engine's next check (status stays `running`
    until then). Canceling a succeeded or failed job is a 409."""
    job = state.store.get_for(job_id, owner)
    outcome = state.store.cancel(job.id)
    if (
        outcome is Cancel.canceled and job.webhook_url
    ):  # was queued, finished now (a running one notifies on stopping)
        state.webhooks.notify(job.id)
    job = state.store.get_for(job_id, owner)
    if outcome is Cancel.finished and job.status != JobState.canceled:
        raise Conflict(f"job already {job.status.value}; it cannot be canceled", "status")
    return JSONResponse(job_view(job), status_code=202 if outcome is Cancel.requested else 200)


@router.get("/v1/jobs/{job_id}/events", response_class=EventSourceResponse)
async def job_events(
    job_id: str,
    request: Request,
    state: State,
    owner: Owner,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
) -> EventSourceResponse:
    """Server-Sent Events: `state`, `progress`, `log` and engine events. Reconnect with
    `Last-Event-ID` to replay what was missed. The stream ends after the final state."""
    await run_in_threadpool(state.store.get_for, job_id, owner)
    after = last_event_id or "0-0"
    if not _stream_id(after):
        raise InvalidInput("Last-Event-ID is not an event id of this API", "Last-Event-ID")

    async def events() -> Any:
        async for item in follow(state.aredis, job_id, after):
            if await request.is_disconnected():
                return
            if item is not None:
                yield item

    return EventSourceResponse(events(), ping=10)


def _stream_id(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return ms.isdigit() and seq.isdigit() and len(value) < 48
