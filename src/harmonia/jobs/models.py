"""Job schemas: the API request, the stored record, its state machine and its events."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobState.succeeded, JobState.failed, JobState.canceled})

#: Every allowed transition. A finished job never changes again.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.queued: frozenset({JobState.running, JobState.canceled}),
    JobState.running: frozenset({JobState.queued, JobState.succeeded, JobState.failed, JobState.canceled}),
    JobState.succeeded: frozenset(),
    JobState.failed: frozenset(),
    JobState.canceled: frozenset(),
}


class JobRequest(BaseModel):
    """The body of `POST /v1/jobs` (and of the original `POST /job`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., pattern=MODEL_NAME_PATTERN, description="engine name, see GET /v1/models")
    mode: Literal["sync", "async"] = "async"
    payload: dict[str, Any] = Field(..., description="the model's input; see GET /v1/models")
    webhook_url: str | None = Field(None, max_length=2048)
    priority: int = Field(0, ge=-10, le=10, description="higher runs first within a queue")
    timeout_s: float | None = Field(None, gt=0, description="per-job time limit")

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class Progress(BaseModel):
    fraction: float = Field(0.0, ge=0.0, le=1.0)
    message: str = ""


class Artifact(BaseModel):
    name: str
    content_type: str
    size: int
    url: str | None = None


class JobError(BaseModel):
    code: str
    message: str
    retryable: bool = False


class Job(BaseModel):
    """The stored job record, returned by `GET /v1/jobs/{id}`."""

    id: str
    model: str
    queue: str
    mode: Literal["sync", "async"] = "async"
    owner: str
    status: JobState = JobState.queued
    payload: dict[str, Any]
    priority: int = 0
    timeout_s: float
    webhook_url: str | None = None
    progress: Progress = Field(default_factory=Progress)
    attempts: int = 0
    worker: str | None = Field(None, description="the worker (host:pid) that runs, or last ran, the job")
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = Field(default_factory=time.time)
    error: JobError | None = None
    result: dict[str, Any] | None = None
    artifacts: list[Artifact] = Field(default_factory=list)
    cancel_requested: bool = False

    @property
    def finished(self) -> bool:
        return self.status.finished


class JobEvent(BaseModel):
    """One entry of a job's event stream (served as SSE; `id` is the Redis stream id)."""

    id: str
    event: Literal["state", "progress", "log", "chunk", "result"] | str
    data: dict[str, Any]


def job_view(job: Job, *, legacy: bool = False) -> dict[str, Any]:
    """The public representation of a job (API answers, webhooks): no owner, with links."""
    base = f"/v1/jobs/{job.id}"
    body = job.model_dump(mode="json", exclude={"owner"})
    body["links"] = {
        "self": base,
        "events": f"{base}/events",
        "cancel": f"{base}/cancel",
        "artifacts": {a.name: f"{base}/artifacts/{a.name}" for a in job.artifacts},
    }
    for artifact in body["artifacts"]:
        artifact["url"] = f"{base}/artifacts/{artifact['name']}"
    if legacy:
        body["job_id"] = job.id
    return body
