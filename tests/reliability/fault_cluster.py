"""Real processes for the fault suite: `harmonia gateway` and `harmonia worker` subprocesses against
a real Valkey, plus the bookkeeping the tests assert on (job states, `succeeded` events per job,
RSS samples). Imported as `fault_cluster` by the tests beside it.

Sizes: the CI size by default; `HARMONIA_FAULT_SCALE=full` runs the issue's full sizes (500 jobs
with SIGKILLs, a 10,000-job drain). The variable is read when the tests are collected, before the
suite's fixture clears `HARMONIA_*` from the environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from harmonia.config import Settings
from harmonia.jobs.keys import RUNNING_KEY, events_key, job_key
from harmonia.jobs.queue import NAMESPACE
from helpers import free_port, wait_for, worker_env

SCALE = os.environ.get("HARMONIA_FAULT_SCALE", "ci").strip().lower()
FULL = SCALE in ("full", "big", "1", "true")


def sized(ci: int, full: int) -> int:
    """The CI size, or the issue's full size under HARMONIA_FAULT_SCALE=full."""
    return full if FULL else ci


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment for a gateway or worker subprocess of this cluster: the test's settings."""
    return worker_env(settings, **extra)


@dataclass
class Proc:
    """One `harmonia` subprocess with its output in a log file (read back as evidence)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def threads(self) -> int:
        return int(psutil.Process(self.pid).num_threads())

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def terminate(self, timeout: float = 60.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Cluster:
    """Gateway and worker subprocesses sharing one Redis URL and data dir; stopped at teardown."""

    settings: Settings
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def _spawn(self, name: str, args: list[str], **env: str) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}-{len(self.procs)}.log"
        with open(log, "wb") as fh:
            popen = subprocess.Popen(
                [sys.executable, "-m", "harmonia", *args],
                env=process_env(self.settings, **{**self.env, **env}),
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def gateway(self, port: int | None = None, **env: str) -> tuple[Proc, str]:
        """A `harmonia gateway` subprocess; returns it and its base URL once /healthz answers."""
        port = port or free_port()
        proc = self._spawn("gateway", ["gateway", "--port", str(port)], **env)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.popen.poll() is not None:
                raise AssertionError(f"gateway exited with {proc.popen.returncode}:\n{proc.output()}")
            try:
                return httpx.get(url + "/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout=60, interval=0.1)
        return proc, url

    def worker(self, *args: str, **env: str) -> Proc:
        return self._spawn("worker", ["worker", *args], **env)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- submitting ------------------------------------------------------------------------------------
@dataclass
class Submission:
    status: int  # 0: no HTTP answer (transport error or client timeout)
    body: Any
    elapsed: float
    error: str = ""


def post_job(client: httpx.Client, body: dict[str, Any]) -> Submission:
    started = time.monotonic()
    try:
        r = client.post("/v1/jobs", json=body)
    except httpx.HTTPError as exc:
        return Submission(0, None, time.monotonic() - started, f"{type(exc).__name__}: {exc}")
    try:
        parsed = r.json()
    except ValueError:
        parsed = r.text
    return Submission(r.status_code, parsed, time.monotonic() - started)


def submit_all(url: str, bodies: list[dict[str, Any]], concurrency: int = 8) -> list[Submission]:
    """POST every body (async jobs) with `concurrency` clients; answers in the order of `bodies`."""
    local = threading.local()

    def one(body: dict[str, Any]) -> Submission:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=30)
        return post_job(local.client, body)

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, bodies))


# --- reading state straight from Redis (fast for thousands of jobs) ---------------------------------
def statuses(r: redis.Redis, ids: Iterable[str]) -> dict[str, str]:
    ids = list(ids)
    out: dict[str, str] = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        pipe = r.pipeline(transaction=False)
        for job_id in chunk:
            pipe.hget(job_key(job_id), "status")
        for job_id, value in zip(chunk, pipe.execute(), strict=True):
            out[job_id] = value.decode() if value else "missing"
    return out


def running_pids(r: redis.Redis) -> set[int]:
    """Pids of the workers holding a running job now (the job records name `host:pid`)."""
    ids = [m.decode() for m in r.zrange(RUNNING_KEY, 0, -1)]
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(job_key(job_id), "status", "worker")
    return {
        int(worker.rsplit(b":", 1)[1]) for status, worker in pipe.execute() if status == b"running" and worker
    }


def wait_finished(r: redis.Redis, ids: list[str], timeout: float) -> dict[str, str]:
    """Wait until every job is finished; AssertionError naming the stragglers otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        states = statuses(r, ids)
        pending = {i: s for i, s in states.items() if s not in ("succeeded", "failed", "canceled")}
        if not pending:
            return states
        if time.monotonic() > deadline:
            sample = dict(list(pending.items())[:10])
            raise AssertionError(
                f"{len(pending)} of {len(ids)} jobs not finished after {timeout} s: {sample}"
            )
        time.sleep(0.2)


def job_fields(r: redis.Redis, job_id: str) -> dict[str, Any]:
    raw = r.hgetall(job_key(job_id))
    return {k.decode(): v.decode() for k, v in raw.items()}


def state_events(r: redis.Redis, ids: list[str]) -> dict[str, list[str]]:
    """The `state` events of each job's event stream, in order (e.g. queued, running, succeeded)."""
    out: dict[str, list[str]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        pipe = r.pipeline(transaction=False)
        for job_id in chunk:
            pipe.xrange(events_key(job_id))
        for job_id, entries in zip(chunk, pipe.execute(), strict=True):
            out[job_id] = [
                json.loads(fields[b"data"]).get("status", "?")
                for _, fields in entries
                if fields.get(b"event") == b"state"
            ]
    return out


def attempts(r: redis.Redis, ids: list[str]) -> dict[str, int]:
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(job_key(job_id), "attempts")
    return {i: int(v or 0) for i, v in zip(ids, pipe.execute(), strict=True)}


def queue_depth(r: redis.Redis, queue: str) -> int:
    return int(r.llen(f"{NAMESPACE}:{queue}"))


def dead_letters(r: redis.Redis, queue: str) -> int:
    return int(r.zcard(f"{NAMESPACE}:{queue}.XQ"))


class RssSampler:
    """Samples the RSS of some processes every `interval` seconds in a thread (psutil)."""

    def __init__(self, procs: dict[str, Proc], interval: float = 0.25) -> None:
        self.procs = procs
        self.interval = interval
        self.samples: dict[str, list[tuple[float, int]]] = {name: [] for name in procs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.interval):
            for name, proc in self.procs.items():
                try:
                    self.samples[name].append((time.monotonic() - started, proc.rss()))
                except psutil.Error:
                    pass

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def values(self, name: str) -> list[int]:
        return [v for _, v in self.samples[name]]


def broker_report(r: redis.Redis, ids: Iterable[str]) -> str:
    """Where the messages of `ids` are (queue, delay queue, dead letters, ack sets): evidence for a
    failure report."""
    wanted = set(ids)
    lines = []
    for key in sorted(r.scan_iter(f"{NAMESPACE}*")):
        kind = r.type(key).decode()
        size = {"list": r.llen, "zset": r.zcard, "hash": r.hlen, "set": r.scard}.get(kind, lambda _: "?")(key)
        lines.append(f"{key.decode()} {kind} {size}")
        if kind == "hash":
            for raw in r.hvals(key):
                message = json.loads(raw)
                if message["args"] and message["args"][0] in wanted:
                    lines.append(f"  message for {message['args'][0]} in {key.decode()}")
    return "\n".join(lines)
