"""Job events over Server-Sent Events, replayed from the job's Redis stream (`Last-Event-ID`)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio

from harmonia.jobs.keys import events_key
from harmonia.jobs.models import JobState
from harmonia.jobs.store import parse_events

FINISHED_VALUES = {s.value for s in (JobState.succeeded, JobState.failed, JobState.canceled)}
BLOCK_MS = 15_000


def is_terminal(event: str, data: dict[str, Any]) -> bool:
    return event == "state" and data.get("status") in FINISHED_VALUES


async def follow(
    client: redis.asyncio.Redis, job_id: str, after: str = "0-0", *, until_finished: bool = True
) -> AsyncIterator[dict[str, Any] | None]:
    """Yield events after `after` as SSE dicts; `None` after a quiet BLOCK_MS (a keep-alive point).
    Ends after the job's terminal state event."""
    last = after
    key = events_key(job_id)
    while True:
        reply = await client.xread({key: last}, count=200, block=BLOCK_MS)
        if not reply:
            yield None
            continue
        for event in parse_events(reply[0][1]):
            last = event.id
            yield {"id": event.id, "event": event.event, "data": json.dumps(event.data)}
            if until_finished and is_terminal(event.event, event.data):
                return


async def wait_finished(client: redis.asyncio.Redis, job_id: str, timeout_s: float) -> bool:
    """True once the job reaches a finished state within `timeout_s`. Reads its stream from the
    start, so a job that finished before the call is seen too."""
    deadline = time.monotonic() + timeout_s
    key = events_key(job_id)
    last = "0-0"
    while (remaining := deadline - time.monotonic()) > 0:
        reply = await client.xread({key: last}, count=200, block=max(1, int(remaining * 1000)))
        if not reply:
            return False
        for event in parse_events(reply[0][1]):
            last = event.id
            if is_terminal(event.event, event.data):
                return True
    return False
