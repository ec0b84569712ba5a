"""`harmonia up` as an operator runs it: one instance per data dir, `--workers 0`, and workers that
wedge are restarted; the worker liveness probe (`harmonia probe worker`) that containers use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harmonia.config import Settings
from harmonia.embedded import EmbeddedValkey
from helpers import free_port, harmonia_up, ready, spawn_worker, wait_for, worker_env

pytestmark = pytest.mark.slow


def _sync_noop(url: str) -> dict:
    body = {"model": "noop", "mode": "sync", "payload": {"note": "x"}}
    r = httpx.post(url + "/v1/jobs", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_second_up_on_the_same_data_dir_refuses_and_the_first_keeps_serving(tmp_path: Path) -> None:
    port, other = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    first = harmonia_up(tmp_path / "d", port)
    try:
        wait_for(lambda: ready(url), timeout=60, interval=0.2)
        valkey_pid = (tmp_path / "d" / "valkey" / "valkey.pid").read_text()
        second = subprocess.run(
            [sys.executable, "-m", "harmonia", "up", "--port", str(other), "--data-dir", str(tmp_path / "d")],
            env={k: v for k, v in os.environ.items() if not k.startswith("HARMONIA_")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr  # one line, no traceback
        assert f"pid {first.pid}" in lines[0] and f":{port}" in lines[0] and "--data-dir" in lines[0]
        # nothing of the first was touched: same Valkey, still serving
        assert (tmp_path / "d" / "valkey" / "valkey.pid").read_text() == valkey_pid
        assert ready(url) and _sync_noop(url)["status"] == "succeeded"
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
    # once the first is gone the data dir is free again
    again = harmonia_up(tmp_path / "d", port)
    try:
        wait_for(lambda: ready(url), timeout=60, interval=0.2)
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=60) == 0


def test_up_with_no_workers_serves_and_queues_for_workers_elsewhere(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    up = harmonia_up(tmp_path / "d", port, "--workers", "0")
    try:
        wait_for(lambda: ready(url), timeout=60, interval=0.2)
        job = httpx.post(url + "/v1/jobs", json={"model": "noop", "payload": {"note": "later"}}).json()
        time.sleep(2)
        assert httpx.get(f"{url}/v1/jobs/{job['id']}").json()["status"] == "queued"  # no worker here
        secret = (tmp_path / "d" / "valkey" / "valkey.secret").read_text().strip()
        vport = (tmp_path / "d" / "valkey" / "port").read_text().strip()
        redis_url = f"redis://harmonia:{secret}@127.0.0.1:{vport}/0"
        worker = spawn_worker(Settings(redis_url=redis_url, data_dir=tmp_path / "d"), "--queues", "noop")
        try:
            status = lambda: httpx.get(f"{url}/v1/jobs/{job['id']}").json()["status"]  # noqa: E731
            wait_for(lambda: status() == "succeeded", timeout=60)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0


def _probe(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "harmonia", "probe", "worker"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_the_liveness_probe_fails_on_a_wedged_worker_and_not_on_a_redis_outage(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path / "data")
    url = server.start()
    port = server.port
    # a 4 s limit instead of 60 s so the test sees the probe fail within seconds
    settings = Settings(
        redis_url=url,
        data_dir=tmp_path / "data",
        worker_liveness_file=tmp_path / "w.alive",
        worker_liveness_max_age_s=4,
    )
    env = worker_env(settings)
    assert _probe(env).returncode == 1  # nothing started yet: no liveness file
    worker = spawn_worker(settings, "--queues", "noop")
    try:
        wait_for(lambda: _probe(env).returncode == 0, timeout=60, interval=0.2)
        # Redis goes away for longer than the limit: the worker's consumers keep restarting, which
        # is alive (restarting the worker would not bring Redis back)
        server.stop()
        time.sleep(7)
        outage = _probe(env)
        assert outage.returncode == 0, outage.stderr
        server = EmbeddedValkey(tmp_path / "data", port=port)
        server.start()
        # the worker is wedged: its process no longer runs at all
        worker.send_signal(signal.SIGSTOP)
        wedged = wait_for(lambda: (p := _probe(env)).returncode == 1 and p, timeout=30, interval=0.5)
        assert "wedged" in wedged.stderr and len(wedged.stderr.strip().splitlines()) == 1
        worker.send_signal(signal.SIGCONT)
        wait_for(lambda: _probe(env).returncode == 0, timeout=30, interval=0.5)
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        server.stop()


def test_up_restarts_a_wedged_worker(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # a 4 s liveness limit instead of 60 s so the wedge is noticed within seconds
    up = harmonia_up(tmp_path / "d", port, HARMONIA_WORKER_LIVENESS_MAX_AGE_S="4")
    try:
        wait_for(lambda: ready(url), timeout=60, interval=0.2)
        alive = tmp_path / "d" / "run" / "worker-0.alive"
        wait_for(alive.exists, timeout=60)
        pid = _sync_noop(url)["worker"].rsplit(":", 1)[1]
        os.kill(int(pid), signal.SIGSTOP)
        # the supervisor kills the wedged worker and starts another, which runs the next job
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or _stopped_and_reaped(int(pid)), timeout=60)
        assert _sync_noop(url)["worker"].rsplit(":", 1)[1] != pid
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0


def _stopped_and_reaped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
