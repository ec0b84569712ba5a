"""ACE-Step and Stable Audio behind the job system: `/v1/models` entries (schemas, licences,
availability), a job run by a worker from a local tiny checkpoint, a job forwarded by the worker to
the model service named by HARMONIA_STABLE_AUDIO_URL, and a running job canceled between steps."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import soundfile as sf

pytest.importorskip("diffusers")

from harmonia.config import Settings
from harmonia.engines.acestep.tiny import make_tiny_acestep
from harmonia.engines.stable_audio.tiny import make_tiny_stable_audio
from harmonia.redis_client import connect
from harmonia.services.model import build_served_engine, create_model_app
from harmonia.worker import WorkerProcess
from helpers import ServerThread, make_gateway, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_ace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_acestep(tmp_path_factory.mktemp("ace") / "tiny")


@pytest.fixture(scope="module")
def stable_audio_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings()
    settings.stable_audio.model = str(make_tiny_stable_audio(tmp_path_factory.mktemp("sa") / "tiny"))
    with ServerThread(create_model_app(build_served_engine("stable-audio", settings), settings)) as server:
        wait_for(lambda: httpx.get(server.url + "/readyz").status_code == 200, timeout=60)
        yield server.url


def _worker(settings: Settings, queues: list[str]) -> WorkerProcess:
    proc = WorkerProcess(settings, connect(settings.redis_url or ""), queues)
    proc.start()
    return proc


def _final(http: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    done = ("succeeded", "failed", "canceled")
    return wait_for(lambda: (j := http.get(f"/v1/jobs/{job_id}").json())["status"] in done and j, timeout)


def test_models_lists_both_with_schema_licence_and_availability(http: httpx.Client) -> None:
    models = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
    for name, field, licence in [
        ("acestep", "lyrics", "MIT"),
        ("stable-audio", "negative_prompt", "Stability"),
    ]:
        entry = models[name]
        assert entry["available"] is True and entry["reason"] is None and entry["queue"] == name
        assert licence in entry["license"]
        assert field in entry["input_schema"]["properties"]


def test_worker_runs_an_acestep_job_from_a_local_checkpoint(settings: Settings, tiny_ace: Path) -> None:
    settings.acestep.model = str(tiny_ace)
    proc = _worker(settings, ["acestep"])
    try:
        with ServerThread(make_gateway(settings)) as gw, httpx.Client(base_url=gw.url, timeout=120) as http:
            bad = http.post("/v1/jobs", json={"model": "acestep", "payload": {"prompt": "x", "bpm": 5}})
            assert bad.status_code == 422 and bad.json()["error"]["field"] == "payload.bpm"
            body = {"prompt": "indie folk", "lyrics": "[chorus]\nhome again", "duration_s": 2.0, "seed": 8}
            r = http.post("/v1/jobs", json={"model": "acestep", "mode": "sync", "payload": body})
            job = r.json()
            assert r.status_code == 200 and job["status"] == "succeeded", job.get("error")
            audio, rate = sf.read(io.BytesIO(http.get(job["artifacts"][0]["url"]).content))
            assert rate == 48000 and audio.shape == (96000, 2)
            assert job["result"]["seed"] == 8 and job["result"]["task"] == "text2music"
            # a limit only the loaded checkpoint knows fails the job with the field, not a crash
            r = http.post(
                "/v1/jobs",
                json={"model": "acestep", "mode": "sync", "payload": {**body, "guidance_scale": 4}},
            )
            failed = r.json()
            assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_input"
            assert "guidance_scale" in failed["error"]["message"]
    finally:
        proc.stop()


def test_stable_audio_jobs_are_forwarded_to_its_service(settings: Settings, stable_audio_url: str) -> None:
    settings.stable_audio_url = stable_audio_url  # HARMONIA_STABLE_AUDIO_URL
    proc = _worker(settings, ["stable-audio"])
    try:
        with ServerThread(make_gateway(settings)) as gw, httpx.Client(base_url=gw.url, timeout=120) as http:
            payload = {"prompt": "rain", "negative_prompt": "hiss", "duration_s": 1.0, "steps": 5}
            job = http.post("/v1/jobs", json={"model": "stable-audio", "payload": payload}).json()
            final = _final(http, job["id"])
            assert final["status"] == "succeeded", final.get("error")
            assert final["result"]["served_by"] == stable_audio_url
            audio, rate = sf.read(io.BytesIO(http.get(final["artifacts"][0]["url"]).content))
            assert rate == 44100 and audio.shape == (44100, 2)
            # the service's 422 (a limit of the loaded checkpoint) fails the job with the field
            job = http.post(
                "/v1/jobs", json={"model": "stable-audio", "payload": {**payload, "duration_s": 30}}
            ).json()
            failed = _final(http, job["id"])
            assert failed["status"] == "failed" and "duration_s" in failed["error"]["message"]
    finally:
        proc.stop()


def test_a_running_job_is_canceled_between_steps(settings: Settings, tiny_ace: Path) -> None:
    settings.acestep.model = str(tiny_ace)
    settings.acestep.max_steps = 1000  # a long run on the tiny checkpoint, so the cancel lands mid-run
    proc = _worker(settings, ["acestep"])
    try:
        with ServerThread(make_gateway(settings)) as gw, httpx.Client(base_url=gw.url, timeout=60) as http:
            payload = {"prompt": "slow ambient", "duration_s": 20.0, "steps": 1000}
            job = http.post("/v1/jobs", json={"model": "acestep", "payload": payload}).json()
            wait_for(
                lambda: http.get(f"/v1/jobs/{job['id']}").json()["progress"]["message"].startswith("step")
            )
            assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
            final = _final(http, job["id"], timeout=30)
            assert final["status"] == "canceled" and final["result"] is None
            step = int(final["progress"]["message"].removeprefix("step ").split("/")[0])
            assert 1 <= step < 1000
    finally:
        proc.stop()
