"""The job store's Redis key layout, in one place (all keys under `harmonia:`):

  job:{id}              hash; scalars as strings, structured fields as JSON strings
  job:{id}:events       stream of {event, data} (capped), replayed by SSE with Last-Event-ID
  jobs:{owner}          zset of the owner's job ids by creation time (listing, paging)
  idem:{owner}:{sha256} the job id created for an Idempotency-Key (+ a hash of the request)
  running               zset of running job ids by lease expiry (orphan checks)
  queued                zset of queued job ids by when they were last checked (lost-message checks)
  bell:{queue}          a queue's doorbell (a capped list workers block on; `queue.py`)

Dramatiq's own keys (`dramatiq:*`: queues, messages, ack sets, heartbeats) belong to `queue.py`.
"""

from __future__ import annotations

import hashlib

PREFIX = "harmonia:"
RUNNING_KEY = f"{PREFIX}running"
QUEUED_KEY = f"{PREFIX}queued"
BELL_PREFIX = f"{PREFIX}bell:"
#: fields of a job hash naming the broker message that carries the job now (written by JobQueue)
MSG_QUEUE_FIELD, MSG_ID_FIELD = "msg_queue", "msg_id"


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def events_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:events"


def owner_index_key(owner: str) -> str:
    return f"{PREFIX}jobs:{owner}"


def idempotency_key(owner: str, key: str) -> str:
    return f"{PREFIX}idem:{owner}:{hashlib.sha256(key.encode()).hexdigest()}"
