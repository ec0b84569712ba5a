"""MusicGen behind the job system: in the worker (local checkpoint), forwarded to the model service
when HARMONIA_MUSICGEN_URL is set, and sync jobs run by a worker ahead of the queued ones."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from harmonia.config import Settings
from harmonia.engines.musicgen.tiny import make_tiny_musicgen
from harmonia.redis_client import connect
from harmonia.services.model import build_served_engine, create_model_app
from harmonia.worker import WorkerProcess
from helpers import ServerThread, free_port, make_gateway, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_musicgen(tmp_path_factory.mktemp("mg") / "tiny")


@pytest.fixture(scope="module")
def service_url(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("svc"))
    settings.musicgen.model = str(tiny)
    app = create_model_app(build_served_engine("musicgen", settings), settings)
    with ServerThread(app) as server:
        wait_for(lambda: httpx.get(server.url + "/readyz").status_code == 200, timeout=120)
        yield server.url


def _audio(http: httpx.Client, job: dict) -> np.ndarray:
    wav = http.get(job["artifacts"][0]["url"]).content
    audio, rate = soundfile.read(io.BytesIO(wav))
    assert rate == 32000
    return np.asarray(audio)


def _worker(settings: Settings, threads: int | None = None) -> WorkerProcess:
    if threads:
        settings.worker_threads = threads
    proc = WorkerProcess(settings, connect(settings.redis_url or ""), ["musicgen"])
    proc.start()
    return proc


def test_worker_runs_musicgen_from_a_local_checkpoint(settings: Settings, tiny: Path) -> None:
    settings.musicgen.model = str(tiny)
    proc = _worker(settings)
    try:
        with ServerThread(make_gateway(settings)) as gw, httpx.Client(base_url=gw.url, timeout=120) as http:
            r = http.post("/v1/jobs", json={"model": "musicgen", "payload": {"text": "", "duration_s": 1}})
            assert r.status_code == 422 and r.json()["error"]["field"] == "payload.text"
            job = http.post(
                "/v1/jobs",
                json={
                    "model": "musicgen",
                    "mode": "sync",
                    "payload": {"text": "solo piano", "duration_s": 1.0},
                },
            ).json()
            assert job["status"] == "succeeded", job.get("error")
            audio = _audio(http, job)
            assert abs(len(audio) / 32000 - 1.0) < 0.1 and np.abs(audio).max() > 0
    finally:
        proc.stop()


def test_sync_jobs_run_once_on_a_worker_ahead_of_queued_ones(settings: Settings, service_url: str) -> None:
    settings.musicgen_url = service_url
    with ServerThread(make_gateway(settings)) as gw, httpx.Client(base_url=gw.url, timeout=120) as http:
        # three async jobs wait in the queue (no worker yet), then a caller asks for a sync one
        waiting = [
            http.post(
                "/v1/jobs", json={"model": "musicgen", "payload": {"text": f"a{i}", "duration_s": 0.5}}
            ).json()["id"]
            for i in range(3)
        ]
        answer: dict[str, httpx.Response] = {}
        sync = {"model": "musicgen", "mode": "sync", "payload": {"text": "violin", "duration_s": 1}}
        caller = threading.Thread(target=lambda: answer.setdefault("sync", http.post("/v1/jobs", json=sync)))
        caller.start()
        wait_for(lambda: len(http.get("/v1/jobs", params={"model": "musicgen"}).json()["jobs"]) == 4)
        proc = _worker(settings, threads=1)  # one thread: jobs run one at a time, in queue order
        try:
            caller.join(timeout=120)
            r = answer["sync"]
            assert r.status_code == 200, r.text
            job = r.json()
            assert job["status"] == "succeeded" and job["attempts"] == 1
            assert job["result"]["served_by"] == service_url
            assert abs(len(_audio(http, job)) / 32000 - 1.0) < 0.1
            done = lambda i: (j := http.get(f"/v1/jobs/{i}").json())["status"] == "succeeded" and j  # noqa: E731
            later = [wait_for(lambda i=i: done(i), 120) for i in waiting]
            # the waiting caller's job went first although it was submitted last
            assert all(job["finished_at"] <= other["started_at"] for other in later)
        finally:
            proc.stop()


def test_async_jobs_are_forwarded_by_the_worker(settings: Settings, service_url: str) -> None:
    settings.musicgen_url = service_url
    proc = _worker(settings)
    try:
        with ServerThread(make_gateway(settings)) as gw, httpx.Client(base_url=gw.url, timeout=120) as http:
            job = http.post(
                "/job", json={"model": "musicgen", "payload": {"text": "drums", "duration_s": 0.5}}
            ).json()
            final = wait_for(
                lambda: (j := http.get(f"/job/{job['id']}").json())["status"] == "succeeded" and j, 120
            )
            assert final["result"]["served_by"] == service_url
    finally:
        proc.stop()


def test_service_down_retries_then_fails_with_the_reason(settings: Settings) -> None:
    settings.musicgen_url = f"http://127.0.0.1:{free_port()}"
    settings.max_retries = 1
    proc = _worker(settings)
    try:
        with ServerThread(make_gateway(settings)) as gw, httpx.Client(base_url=gw.url, timeout=60) as http:
            job = http.post(
                "/v1/jobs", json={"model": "musicgen", "payload": {"text": "x", "duration_s": 1}}
            ).json()
            final = wait_for(
                lambda: (j := http.get(f"/v1/jobs/{job['id']}").json())["status"] == "failed" and j, 60
            )
            assert final["attempts"] == 2 and "unreachable" in final["error"]["message"]
            assert settings.musicgen_url in final["error"]["message"]
    finally:
        proc.stop()
