"""At-least-once under real process deaths: SIGKILLed workers, a restarted Valkey, `harmonia up`
stopped and started again. Everything here runs real processes."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from harmonia.config import Settings
from harmonia.embedded import EmbeddedValkey
from helpers import (
    ServerThread,
    free_port,
    harmonia_up,
    make_gateway,
    ready,
    short_recovery,
    spawn_worker,
    wait_for,
)

pytestmark = pytest.mark.slow


def _status(http: httpx.Client, job_id: str) -> dict:
    return http.get(f"/v1/jobs/{job_id}").json()


def test_sigkill_worker_mid_job_still_succeeds_once(settings: Settings, http: httpx.Client) -> None:
    short_recovery(settings)  # the second worker takes the job over within seconds, not 90 s
    first = spawn_worker(settings, "--queues", "noop")
    job = http.post(
        "/v1/jobs", json={"model": "noop", "payload": {"sleep_s": 2.0, "steps": 20, "artifact": True}}
    ).json()
    wait_for(lambda: _status(http, job["id"])["progress"]["fraction"] >= 0.2, timeout=30)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert _status(http, job["id"])["status"] == "running"
    second = spawn_worker(settings, "--queues", "noop")
    try:
        final = wait_for(
            lambda: (j := _status(http, job["id"]))["status"] in ("succeeded", "failed") and j, timeout=60
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert final["status"] == "succeeded" and final["attempts"] == 2
    states = []
    with http.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        states = [line for line in r.iter_lines() if line.startswith('data: {"status"')]
    assert sum('"succeeded"' in s for s in states) == 1  # exactly one result recorded
    assert http.get(final["artifacts"][0]["url"]).json()["sleep_s"] == 2.0


def test_restarting_embedded_valkey_between_submit_and_run_loses_nothing(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path / "data")
    url = server.start()
    settings = Settings(redis_url=url, data_dir=tmp_path / "data")
    with ServerThread(make_gateway(settings)) as gw:
        ids = [
            httpx.post(gw.url + "/v1/jobs", json={"model": "noop", "payload": {"note": str(i)}}).json()["id"]
            for i in range(20)
        ]
    server.stop()
    server = EmbeddedValkey(tmp_path / "data")
    assert server.start() == url  # same port and password after a restart
    worker = spawn_worker(settings)
    try:
        with ServerThread(make_gateway(settings)) as gw, httpx.Client(base_url=gw.url) as http:
            finals = [
                wait_for(lambda i=i: (j := _status(http, i))["status"] == "succeeded" and j) for i in ids
            ]
        assert [f["result"]["note"] for f in finals] == [str(i) for i in range(20)]
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        server.stop()


def test_harmonia_up_stop_start_keeps_jobs_and_results(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    up = harmonia_up(tmp_path / "d", port)
    try:
        wait_for(lambda: ready(url), timeout=60, interval=0.2)
        done = httpx.post(
            url + "/v1/jobs", json={"model": "noop", "mode": "sync", "payload": {"artifact": True}}
        ).json()
        assert done["status"] == "succeeded"
        running = httpx.post(
            url + "/job", json={"model": "noop", "mode": "async", "payload": {"sleep_s": 1.5, "steps": 5}}
        ).json()
        wait_for(lambda: httpx.get(f"{url}/job/{running['id']}").json()["status"] == "running")
    finally:
        up.send_signal(signal.SIGTERM)  # graceful: the running job finishes first
        assert up.wait(timeout=60) == 0
    up = harmonia_up(tmp_path / "d", port)
    try:
        wait_for(lambda: ready(url), timeout=60, interval=0.2)
        assert httpx.get(f"{url}/v1/jobs/{running['id']}").json()["status"] == "succeeded"
        again = httpx.get(f"{url}/v1/jobs/{done['id']}").json()
        assert again["status"] == "succeeded"
        assert httpx.get(url + again["artifacts"][0]["url"]).status_code == 200
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0


def test_valkey_orphaned_by_a_killed_up_is_stopped_before_a_restart(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    up = harmonia_up(tmp_path / "d", port)
    try:
        wait_for(lambda: ready(url), timeout=60, interval=0.2)
        done = httpx.post(url + "/v1/jobs", json={"model": "noop", "mode": "sync", "payload": {}}).json()
        assert done["status"] == "succeeded"
    finally:
        up.send_signal(signal.SIGKILL)  # no chance to stop its Valkey
        up.wait()
    pid = int((tmp_path / "d" / "valkey" / "valkey.pid").read_text())
    assert Path(f"/proc/{pid}").exists()  # the orphan still owns the data dir
    up = harmonia_up(tmp_path / "d", port)
    try:
        wait_for(lambda: ready(url), timeout=60, interval=0.2)
        assert not Path(f"/proc/{pid}").exists()  # stopped before the new server started
        assert httpx.get(f"{url}/v1/jobs/{done['id']}").json()["status"] == "succeeded"
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
