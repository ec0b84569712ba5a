"""Stateful property test of job transitions against a real Valkey: whatever order of claims,
lease lapses, beats, finishes, retries and cancels happens, the store agrees with a simple model,
a finished job never changes, and only the newest claim can record a result."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import settings as hsettings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from harmonia.embedded import EmbeddedValkey
from harmonia.jobs.models import FINISHED, Job, JobState
from harmonia.jobs.store import JobStore, new_job_id
from harmonia.redis_client import connect


@pytest.fixture
def machine_store(valkey: EmbeddedValkey) -> None:
    client = connect(valkey.url)
    client.flushall()
    JobMachine.store = JobStore(client, lease_s=60)


class JobMachine(RuleBasedStateMachine):
    store: JobStore

    def __init__(self) -> None:
        super().__init__()
        job = Job(id=new_job_id(), model="noop", queue="noop", owner="o", payload={}, timeout_s=5)
        self.job_id = self.store.create(job)[0].id
        self.status = JobState.queued
        self.claims: list[str] = []  # every claim ever handed out; the last one is current
        self.lease_live = False
        self.cancel_requested = False
        self.attempts = 0

    @property
    def current(self) -> str | None:
        return self.claims[-1] if self.status == JobState.running and self.claims else None

    @rule()
    def claim(self) -> None:
        outcome, token, extra = self.store.claim(self.job_id)
        if self.status in FINISHED:
            assert outcome == "finished"
        elif self.status == JobState.running and self.lease_live:
            assert outcome == "leased"
        elif self.cancel_requested:
            assert outcome == "canceled"
            self.status = JobState.canceled
        else:
            assert outcome == "claimed"
            self.attempts += 1
            assert extra == self.attempts
            self.claims.append(token)
            self.status, self.lease_live = JobState.running, True

    @precondition(lambda self: self.status == JobState.running)
    @rule()
    def lease_lapses(self) -> None:
        # the worker holding the job died: time passes beyond its lease
        self.store.r.hset(f"harmonia:job:{self.job_id}", "lease_until", 0)
        self.lease_live = False

    @rule(which=st.integers(min_value=0, max_value=5))
    def beat(self, which: int) -> None:
        if not self.claims:
            return
        token = self.claims[min(which, len(self.claims) - 1)]
        outcome = self.store.beat(self.job_id, token)
        if self.status == JobState.running and token == self.current:
            assert outcome == ("cancel" if self.cancel_requested else "ok")
            self.lease_live = True
        else:
            assert outcome == "lost"

    @rule(
        to=st.sampled_from([JobState.succeeded, JobState.failed, JobState.canceled, JobState.queued]),
        stale=st.booleans(),
    )
    def finish(self, to: JobState, stale: bool) -> None:
        token = (self.claims[0] if stale and self.claims else self.current) or ""
        outcome, _ = self.store.transition(self.job_id, to, claim=token or "none")
        ok = self.status == JobState.running and token == self.current and token != ""
        # the spec: only a running job moves to a result or back to the queue; cancel also from queued
        allowed_from = {JobState.running, JobState.queued} if to == JobState.canceled else {JobState.running}
        assert outcome == ("ok" if ok else ("stale" if self.status in allowed_from else "refused"))
        if ok:
            self.status = to
            self.lease_live = False

    @rule()
    def cancel(self) -> None:
        outcome = self.store.cancel(self.job_id)
        if self.status == JobState.queued:
            assert outcome == "canceled"
            self.status = JobState.canceled
        elif self.status == JobState.running:
            assert outcome == "requested"
            self.cancel_requested = True
        else:
            assert outcome == "finished"

    @invariant()
    def store_agrees(self) -> None:
        job = self.store.get(self.job_id)
        assert job is not None
        assert job.status == self.status
        assert job.attempts == self.attempts
        if self.status in FINISHED:
            assert job.finished_at is not None


JobMachine.TestCase.settings = hsettings(max_examples=40, stateful_step_count=25, deadline=None)


@pytest.mark.usefixtures("machine_store")
class TestJobTransitions(JobMachine.TestCase):  # type: ignore[name-defined]
    pass
