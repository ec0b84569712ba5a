"""Job records on Redis: creation (with idempotency), atomic checked transitions, progress, cancel,
leases for at-least-once delivery, a capped event stream per job for SSE replay, and TTLs.

The key layout is `keys.py`'s.

Every state change runs as one Lua script that checks the current state (and, for a running job,
the claim token of the worker holding it), so a finished job never changes again and a worker
whose lease was taken over cannot record a second result.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio

from harmonia.errors import Conflict, DependencyDown, InvalidInput, NotFound
from harmonia.jobs.keys import (
    MSG_ID_FIELD,
    MSG_QUEUE_FIELD,
    QUEUED_KEY,
    RUNNING_KEY,
    events_key,
    idempotency_key,
    job_key,
    owner_index_key,
)
from harmonia.jobs.models import FINISHED, TRANSITIONS, Job, JobEvent, JobState

if TYPE_CHECKING:
    from harmonia.jobs.queue import Outgoing

#: how long an async store call may take before Redis counts as unreachable (the sync client's
#: socket timeout, for the same reason)
ASYNC_TIMEOUT_S = 10.0
_QUEUED_EVENT = json.dumps({"status": "queued"})

_JSON_FIELDS = ("payload", "progress", "error", "result", "artifacts")

_NOW_MS = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Create a job and, in the same step, the broker message that carries it: nothing is written at all,
# or the record, its indexes, its first event and its message all are (no record without a message).
# KEYS: job, events, owner index, idem key (or ""), queued index,
#       queue list, queue messages, queue bell (all three "" = record only, no message)
# ARGV: events_maxlen, idem_ttl, request_hash, created_at, event_json,
#       message id, message data, front ('1' = head of the queue), field/value pairs...
_CREATE = (
    _NOW_MS
    + f"""
if KEYS[4] ~= '' then
  local existing = redis.call('HMGET', KEYS[4], 'id', 'hash')
  if existing[1] then
    return {{'existing', existing[1], existing[2]}}
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('ZADD', KEYS[3], ARGV[4], id)
redis.call('ZADD', KEYS[5], now_ms, id)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'event', 'state', 'data', ARGV[5])
if KEYS[4] ~= '' then
  redis.call('HSET', KEYS[4], 'id', id, 'hash', ARGV[3])
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
end
if KEYS[6] ~= '' then
  redis.call('HSET', KEYS[7], ARGV[6], ARGV[7])
  local push = ARGV[8] == '1' and 'LPUSH' or 'RPUSH'
  redis.call(push, KEYS[6], ARGV[6])
  local queue = redis.call('HGET', KEYS[1], 'queue')
  redis.call('HSET', KEYS[1], '{MSG_QUEUE_FIELD}', queue, '{MSG_ID_FIELD}', ARGV[6])
  redis.call('LPUSH', KEYS[8], 1)
  redis.call('LTRIM', KEYS[8], 0, 63)
end
return {{'created', id, ARGV[3]}}
"""
)

# KEYS: job, events, running index, queued index
# ARGV: allowed_from (csv), to, claim ('' = any), events_maxlen, ttl_ms (0 = none), event_kind,
#       event_json, field/value pairs...
_TRANSITION = (
    _NOW_MS
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == status then allowed = true end end
if not allowed then return {'refused', status} end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'claim') ~= ARGV[3] then return {'stale', status} end
for i = 8, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
redis.call('ZREM', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
if ARGV[2] == 'queued' then
  redis.call('ZADD', KEYS[4], now_ms, redis.call('HGET', KEYS[1], 'id'))
else
  redis.call('ZREM', KEYS[4], redis.call('HGET', KEYS[1], 'id'))
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[6], 'data', ARGV[7])
if tonumber(ARGV[5]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return {'ok', status}
"""
)

# Claim a job for one attempt. A queued job is claimed; a running job only when its lease expired
# (its worker died: this is the redelivery of an unacked message). Lease times use the server clock.
# KEYS: job, events, running index, queued index
# ARGV: claim, lease_ms, now, events_maxlen, job_id, worker
_CLAIM = """
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_until', 'cancel_requested', 'attempts')
local status = f[1]
if not status then return {'missing', '', '0'} end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if status == 'running' then
  local lease = tonumber(f[2] or '0')
  if lease > now_ms then return {'leased', status, tostring(lease - now_ms)} end
elseif status ~= 'queued' then
  return {'finished', status, '0'}
end
redis.call('ZREM', KEYS[4], ARGV[5])
if f[3] == '1' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[3], 'updated_at', ARGV[3],
    'claim', '')
  redis.call('ZREM', KEYS[3], ARGV[5])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', 'state',
    'data', '{"status":"canceled","reason":"canceled before it ran"}')
  return {'canceled', status, '0'}
end
local attempts = tonumber(f[4] or '0') + 1
redis.call('HSET', KEYS[1], 'status', 'running', 'claim', ARGV[1], 'lease_until', now_ms + tonumber(ARGV[2]),
  'attempts', attempts, 'updated_at', ARGV[3], 'worker', ARGV[6])
redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[2]), ARGV[5])
local started = redis.call('HGET', KEYS[1], 'started_at')
if not started or started == '' then redis.call('HSET', KEYS[1], 'started_at', ARGV[3]) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', 'state',
  'data', '{"status":"running","attempt":' .. attempts .. '}')
return {'claimed', status, tostring(attempts)}
"""

# KEYS: job, events, running index
# ARGV: claim, lease_ms, now, events_maxlen, progress_json ('' = lease only), job_id
_BEAT = """
local f = redis.call('HMGET', KEYS[1], 'status', 'claim', 'cancel_requested')
if f[1] ~= 'running' or f[2] ~= ARGV[1] then return {'lost', f[1] or ''} end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'lease_until', now_ms + tonumber(ARGV[2]))
redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[2]), ARGV[6])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'progress', ARGV[5], 'updated_at', ARGV[3])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'event', 'progress', 'data', ARGV[5])
end
return {f[3] == '1' and 'cancel' or 'ok', f[1]}
"""

# KEYS: job, events, queued index   ARGV: now, events_maxlen, ttl_ms, job_id
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status == 'queued' then
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'cancel_requested', '1', 'finished_at', ARGV[1],
    'updated_at', ARGV[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', 'state',
    'data', '{"status":"canceled","reason":"canceled while queued"}')
  if tonumber(ARGV[3]) > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  end
  return {'canceled', status}
elseif status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated_at', ARGV[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', 'log',
    'data', '{"message":"cancel requested; stopping at the next check"}')
  return {'requested', status}
end
return {'finished', status}
"""


# Ids in an index (running: by lease expiry; queued: by last check) whose score is more than
# `grace_ms` old. Pushes their score forward so that concurrent reapers do not all pick the same
# ones, and a queued job with a live message is looked at again only after another `push_ms`.
# KEYS: index  ARGV: grace_ms, push_ms
_DUE = (
    _NOW_MS
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, now_ms - tonumber(ARGV[1]), 'LIMIT', 0, 100)
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), id) end
return ids
"""
)


class Claim(StrEnum):
    """What `JobStore.claim` found."""

    claimed = "claimed"  # this attempt holds the job now
    leased = "leased"  # another live attempt holds it
    finished = "finished"  # it already finished
    canceled = "canceled"  # cancel was requested before it ran: it is canceled now
    missing = "missing"  # no such job (expired)


class Outcome(StrEnum):
    """What `JobStore.transition` did."""

    ok = "ok"
    refused = "refused"  # not allowed from the job's current state
    stale = "stale"  # the claim is no longer the job's (another attempt took over)
    missing = "missing"


class Beat(StrEnum):
    """What a lease renewal (`JobStore.beat`) learned."""

    ok = "ok"
    cancel = "cancel"  # still ours, and a cancel was requested
    lost = "lost"  # no longer ours: another attempt took over, or the job finished


class Cancel(StrEnum):
    """What `JobStore.cancel` did."""

    canceled = "canceled"  # it was queued: canceled now, it never runs
    requested = "requested"  # it is running: it stops at its engine's next check
    finished = "finished"  # it had already finished
    missing = "missing"


def new_job_id() -> str:
    # time-ordered prefix keeps ids sortable by creation; the random part makes them unguessable
    return f"{int(time.time() * 1000):x}{secrets.token_hex(8)}"


def _s(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _dec(raw: dict[bytes, bytes]) -> dict[str, Any]:
    data: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    doc: dict[str, Any] = {}
    for key in Job.model_fields:
        if key not in data or data[key] == "":
            continue
        value = data[key]
        if key in _JSON_FIELDS:
            value = json.loads(value)
        elif key == "cancel_requested":
            value = value == "1"
        doc[key] = value
    return doc


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise DependencyDown(f"redis unreachable: {exc}") from exc


class JobStore:
    """Job records for one Redis connection. Thread-safe (redis-py pools connections)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        events_maxlen: int = 1000,
        result_ttl_s: int = 0,
        lease_s: float = 30.0,
        idempotency_ttl_s: int = 24 * 3600,
        aclient: redis.asyncio.Redis | None = None,
    ) -> None:
        """`aclient` (the same Redis, asyncio) serves the `a*` methods: the gateway's hot paths."""
        self.r = client
        self.ar = aclient
        self.events_maxlen = events_maxlen
        self.result_ttl_ms = int(result_ttl_s * 1000)
        self.lease_ms = int(lease_s * 1000)
        self.idempotency_ttl_ms = int(max(idempotency_ttl_s, result_ttl_s) * 1000)
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._claim = client.register_script(_CLAIM)
        self._beat = client.register_script(_BEAT)
        self._cancel = client.register_script(_CANCEL)
        self._due = client.register_script(_DUE)

    # --- create / read ---------------------------------------------------------------------------
    def _create_call(
        self, job: Job, key: str | None, request_hash: str, message: Outgoing | None
    ) -> tuple[list[str], list[Any]]:
        idem = idempotency_key(job.owner, key) if key else ""
        fields: list[str] = []
        for name, value in job.model_dump(mode="json").items():
            fields += [name, json.dumps(value) if name in _JSON_FIELDS else _s(value)]
        queue_keys = [message.queue_key, message.messages_key, message.bell_key] if message else ["", "", ""]
        keys = [job_key(job.id), events_key(job.id), owner_index_key(job.owner), idem, QUEUED_KEY]
        keys += queue_keys
        args = [
            self.events_maxlen, self.idempotency_ttl_ms, request_hash, job.created_at, _QUEUED_EVENT,
            message.message_id if message else "", message.data if message else b"",
            "1" if message and message.front else "0", *fields,
        ]  # fmt: skip
        return keys, args

    def create(
        self, job: Job, key: str | None = None, request_hash: str = "", message: Outgoing | None = None
    ) -> tuple[Job, bool]:
        """Store a new queued job, and with `message` (from `JobQueue.outgoing`) enqueue it in the
        same atomic step. With an idempotency key already used by this owner, return the job made
        for it instead (`created` is False, nothing is enqueued); a different request under the same
        key is a conflict."""
        keys, args = self._create_call(job, key, request_hash, message)
        with _redis_errors():
            outcome, job_id, stored_hash = self._create(keys=keys, args=args)
        if outcome == b"existing":
            existing = self.get(job_id.decode())
            return self._existing(job_id.decode(), stored_hash, request_hash, existing), False
        return job, True

    async def acreate(
        self, job: Job, key: str | None = None, request_hash: str = "", message: Outgoing | None = None
    ) -> tuple[Job, bool]:
        """`create` on the async client, in one round trip (the gateway's submission path)."""
        keys, args = self._create_call(job, key, request_hash, message)
        async with self._aredis_errors():
            outcome, job_id, stored_hash = await self._aeval(self._create, keys, args)
        if outcome == b"existing":
            existing = await self.aget(job_id.decode())
            return self._existing(job_id.decode(), stored_hash, request_hash, existing), False
        return job, True

    @staticmethod
    def _existing(job_id: str, stored_hash: bytes | None, request_hash: str, existing: Job | None) -> Job:
        if request_hash and stored_hash and stored_hash.decode() != request_hash:
            raise Conflict("Idempotency-Key was already used for a different request")
        if existing is None:
            raise Conflict("Idempotency-Key refers to a job that has expired; use a new key")
        return existing

    async def aget(self, job_id: str) -> Job | None:
        """`get` on the async client (the gateway's read path)."""
        async with self._aredis_errors():
            raw = await self.ar.hgetall(job_key(job_id))
        return Job.model_validate(_dec(raw)) if raw else None

    async def aget_for(self, job_id: str, owner: str) -> Job:
        """`get_for` on the async client."""
        job = await self.aget(job_id) if _valid_id(job_id) else None
        if job is None or job.owner != owner:
            raise NotFound(f"no job {job_id!r}")
        return job

    async def _aeval(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a registered script on the async client. Calls EVALSHA itself: redis-py's async
        Script checks `isinstance(client, Pipeline)` on every call, a typing-Protocol check that
        cost a tenth of the gateway's CPU under load."""
        ar = self.ar
        if ar is None:
            raise RuntimeError("this JobStore has no async client")
        try:
            return await ar.evalsha(script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:  # a restarted server forgot it: load it again
            await ar.script_load(script.script)
            return await ar.evalsha(script.sha, len(keys), *keys, *args)

    @asynccontextmanager
    async def _aredis_errors(self) -> AsyncIterator[None]:
        if self.ar is None:
            raise RuntimeError("this JobStore has no async client")
        try:
            async with asyncio.timeout(ASYNC_TIMEOUT_S):
                yield
        except (redis.ConnectionError, redis.TimeoutError, TimeoutError) as exc:
            raise DependencyDown(f"redis unreachable: {exc or type(exc).__name__}") from exc

    def get(self, job_id: str) -> Job | None:
        with _redis_errors():
            raw = self.r.hgetall(job_key(job_id))
        if not raw:
            return None
        return Job.model_validate(_dec(raw))

    def get_for(self, job_id: str, owner: str) -> Job:
        """The job if it exists and belongs to `owner`; NotFound otherwise (never reveal others' jobs)."""
        job = self.get(job_id) if _valid_id(job_id) else None
        if job is None or job.owner != owner:
            raise NotFound(f"no job {job_id!r}")
        return job

    def list(
        self,
        owner: str,
        *,
        status: JobState | None = None,
        model: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """The owner's jobs, newest first, filtered. `cursor` is the opaque value returned with the
        previous page; None when there is nothing more."""
        key = owner_index_key(owner)
        after: tuple[float, str] | None = _decode_cursor(cursor) if cursor else None
        max_score = repr(after[0]) if after else "+inf"
        found: list[Job] = []
        last: tuple[float, str] | None = None
        budget = limit * 20  # filtered listings scan at most this many records per page
        offset = 0
        exhausted = False
        with _redis_errors():
            while len(found) < limit and budget > 0:
                batch = self.r.zrevrangebyscore(
                    key, max_score, "-inf", start=offset, num=200, withscores=True
                )
                if not batch:
                    exhausted = True
                    break
                offset += len(batch)
                for member, score in batch:
                    job_id = member.decode()
                    if after and score == after[0] and job_id >= after[1]:
                        continue
                    last = (score, job_id)
                    budget -= 1
                    job = self.get(job_id)
                    if job is None:
                        self.r.zrem(key, job_id)  # its record expired: drop it from the index
                    elif (status is None or job.status == status) and (model is None or job.model == model):
                        found.append(job)
                    if len(found) == limit or budget == 0:
                        break
        if exhausted or last is None:
            return found, None
        return found, base64.urlsafe_b64encode(f"{last[0]!r}:{last[1]}".encode()).decode()

    # --- worker side -----------------------------------------------------------------------------
    def claim(self, job_id: str, worker: str = "") -> tuple[Claim, str, int]:
        """Try to take a job for one attempt by `worker` (host:pid, recorded on the job). Returns
        (outcome, claim_token, attempt_or_wait_ms): outcome is 'claimed', 'leased' (another live
        worker holds it; wait that many ms), 'finished', 'canceled' (cancel requested before it
        ran; now finished) or 'missing'."""
        token = secrets.token_hex(8)
        with _redis_errors():
            outcome, _, extra = self._claim(
                keys=[job_key(job_id), events_key(job_id), RUNNING_KEY, QUEUED_KEY],
                args=[token, self.lease_ms, time.time(), self.events_maxlen, job_id, worker],
            )
        if outcome == b"canceled":
            self._expire(job_id)
        return Claim(outcome.decode()), token, int(extra)

    def beat(self, job_id: str, claim: str, progress: dict[str, Any] | None = None) -> Beat:
        """Refresh the lease (and record progress). Returns 'ok', 'cancel' (cancel requested) or
        'lost' (the claim is no longer ours: another attempt took over or the job finished)."""
        with _redis_errors():
            outcome, _ = self._beat(
                keys=[job_key(job_id), events_key(job_id), RUNNING_KEY],
                args=[
                    claim,
                    self.lease_ms,
                    time.time(),
                    self.events_maxlen,
                    json.dumps(progress) if progress else "",
                    job_id,
                ],
            )
        return Beat(outcome.decode())

    def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        claim: str = "",
        fields: dict[str, Any] | None = None,
        event: dict[str, Any] | None = None,
    ) -> tuple[Outcome, JobState | None]:
        """Move a job to `to` if allowed from its current state (and `claim` still holds it).
        Returns ('ok' | 'refused' | 'stale' | 'missing', previous_state)."""
        allowed_from = [s.value for s, targets in TRANSITIONS.items() if to in targets]
        now = time.time()
        values: dict[str, Any] = {"updated_at": now, **(fields or {})}
        if to in FINISHED:
            values.setdefault("finished_at", now)
            values["claim"] = ""
        if to == JobState.queued:
            values["claim"] = ""
            values["lease_until"] = 0
        flat: list[str] = []
        for name, value in values.items():
            flat += [name, json.dumps(value) if name in _JSON_FIELDS else _s(value)]
        ttl = self.result_ttl_ms if to in FINISHED else 0
        payload = json.dumps({"status": to.value, **(event or {})})
        with _redis_errors():
            outcome, previous = self._transition(
                keys=[job_key(job_id), events_key(job_id), RUNNING_KEY, QUEUED_KEY],
                args=[
                    ",".join(allowed_from),
                    to.value,
                    claim,
                    self.events_maxlen,
                    ttl,
                    "state",
                    payload,
                    *flat,
                ],
            )
        prev = JobState(previous.decode()) if previous else None
        return Outcome(outcome.decode()), prev

    def cancel(self, job_id: str) -> Cancel:
        """'canceled' (it was queued), 'requested' (running; stops at the next check), 'finished'."""
        with _redis_errors():
            outcome, _ = self._cancel(
                keys=[job_key(job_id), events_key(job_id), QUEUED_KEY],
                args=[time.time(), self.events_maxlen, self.result_ttl_ms, job_id],
            )
        return Cancel(outcome.decode())

    def orphans(self, grace_ms: int) -> list[str]:
        """Running jobs nobody holds (lease lapsed more than `grace_ms` ago): the message that
        carried them was lost, e.g. nacked by a worker that failed while recording a result."""
        with _redis_errors():
            ids = self._due(keys=[RUNNING_KEY], args=[grace_ms, grace_ms])
        return [i.decode() for i in ids]

    def queued_due(self, grace_ms: int) -> list[str]:
        """Queued jobs not looked at for `grace_ms` (since they were queued or last checked):
        the reaper checks that a broker message still carries each one."""
        with _redis_errors():
            ids = self._due(keys=[QUEUED_KEY], args=[grace_ms, 0])
        return [i.decode() for i in ids]

    def message_of(self, job_id: str) -> tuple[str | None, str, str]:
        """(status or None if gone, broker queue, message id) of a job, for the reaper."""
        with _redis_errors():
            status, mq, mid = self.r.hmget(job_key(job_id), "status", MSG_QUEUE_FIELD, MSG_ID_FIELD)
        if status is None:
            with _redis_errors():
                self.r.zrem(QUEUED_KEY, job_id)
            return None, "", ""
        return status.decode(), (mq or b"").decode(), (mid or b"").decode()

    def _expire(self, job_id: str) -> None:
        if self.result_ttl_ms > 0:
            with _redis_errors():
                self.r.pexpire(job_key(job_id), self.result_ttl_ms)
                self.r.pexpire(events_key(job_id), self.result_ttl_ms)

    def add_event(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        with _redis_errors():
            self.r.xadd(
                events_key(job_id),
                {"event": kind, "data": json.dumps(data)},
                maxlen=self.events_maxlen,
                approximate=True,
            )

    # --- events ----------------------------------------------------------------------------------
    def events(self, job_id: str, after: str = "0-0", count: int = 500) -> list[JobEvent]:
        with _redis_errors():
            entries = self.r.xrange(
                events_key(job_id), min=f"({after}" if after != "0-0" else "-", count=count
            )
        return [_event(eid, fields) for eid, fields in entries]


def _event(eid: bytes, fields: dict[bytes, bytes]) -> JobEvent:
    return JobEvent(
        id=eid.decode(),
        event=fields.get(b"event", b"log").decode(),
        data=json.loads(fields.get(b"data", b"{}")),
    )


def parse_events(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[JobEvent]:
    return [_event(eid, fields) for eid, fields in entries]


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        score, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split(":", 1)
        return float(score), job_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("not a cursor returned by this API", "cursor") from exc


def _valid_id(job_id: str) -> bool:
    return 8 <= len(job_id) <= 64 and job_id.isalnum()
