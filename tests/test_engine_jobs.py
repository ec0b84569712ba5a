"""Engines other than noop behind the job system: availability with reasons, fail-fast submissions,
and a singing job run end to end by a worker (tiny voicebank built by the tests)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
import soundfile

from harmonia.config import Settings
from harmonia.redis_client import connect
from harmonia.worker import WorkerProcess
from helpers import ServerThread, make_gateway, wait_for

sys.path.insert(0, str(Path(__file__).parent / "engines" / "diffsinger"))
from diffsinger_fixtures import build_basic


def test_unconfigured_diffsinger_is_listed_unavailable_and_jobs_fail_fast(http: httpx.Client) -> None:
    models = {m["name"]: m for m in http.get("/v1/models").json()["models"]}
    assert models["diffsinger"]["available"] is False
    assert "voicebank" in models["diffsinger"]["reason"]
    r = http.post("/v1/jobs", json={"model": "diffsinger", "payload": {"notes": []}})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "engine_unavailable" and "voicebank" in r.json()["error"]["message"]


def test_diffsinger_job_runs_through_a_worker(settings: Settings, tmp_path: Path) -> None:
    settings.diffsinger.voicebank = build_basic(tmp_path / "bank")
    proc = WorkerProcess(settings, connect(settings.redis_url or ""), ["diffsinger"])
    proc.start()
    try:
        with ServerThread(make_gateway(settings)) as gw, httpx.Client(base_url=gw.url, timeout=60) as http:
            bad = http.post("/v1/jobs", json={"model": "diffsinger", "payload": {"notes": [{"lyric": "la"}]}})
            assert bad.status_code == 422 and bad.json()["error"]["field"].startswith("payload.notes")
            notes = [{"lyric": "la", "note": "C4", "beats": 1}, {"lyric": "mi", "note": "E4", "beats": 2}]
            job = http.post(
                "/v1/jobs",
                json={"model": "diffsinger", "mode": "sync", "payload": {"notes": notes, "tempo": 120}},
            ).json()
            assert job["status"] == "succeeded", job.get("error")
            wav = http.get(job["artifacts"][0]["url"]).content
            audio, rate = soundfile.read(io.BytesIO(wav))
            assert rate == 44100 and abs(len(audio) / rate - 1.5) < 0.6 and abs(audio).max() > 0.001
            unknown = http.post(
                "/v1/jobs",
                json={
                    "model": "diffsinger",
                    "payload": {"notes": [{"lyric": "xyzzy", "note": "C4", "beats": 1}]},
                },
            ).json()
            final = wait_for(
                lambda: (
                    (j := http.get(f"/v1/jobs/{unknown['id']}").json())["status"] != "queued"
                    and j["status"] != "running"
                    and j
                )
            )
            assert final["status"] == "failed" and "xyzzy" in final["error"]["message"]
    finally:
        proc.stop()


def test_ollama_availability_follows_the_daemon(settings: Settings) -> None:
    from fake_ollama import FakeOllama
    from harmonia.engines.registry import Registry
    from helpers import free_port

    settings.ollama.url = f"http://127.0.0.1:{free_port()}"
    down = {m["name"]: m for m in Registry(settings).describe()}["ollama"]
    assert down["available"] is False and settings.ollama.url in down["reason"]
    with FakeOllama(models=("llama3.2:latest",)) as fake:
        settings.ollama.url = fake.url
        up = {m["name"]: m for m in Registry(settings).describe()}["ollama"]
        assert up["available"] is True and up["reason"] is None
        settings.ollama.model = "not-pulled"
        missing = {m["name"]: m for m in Registry(settings).describe()}["ollama"]
        assert missing["available"] is False and "ollama pull not-pulled" in missing["reason"]


def test_ollama_job_runs_through_a_worker(settings: Settings) -> None:
    import json

    from fake_ollama import FakeOllama

    answer = {
        "prompt": "melancholic solo piano, slow, soft reverb",
        "genre": "classical",
        "instruments": ["piano"],
        "tempo_bpm": 66,
        "mood": "sad",
        "production": "intimate",
    }
    with FakeOllama(models=("llama3.2:latest",)) as fake:
        settings.ollama.url = fake.url
        fake.push(json.dumps(answer))
        proc = WorkerProcess(settings, connect(settings.redis_url or ""), ["ollama"])
        proc.start()
        try:
            with (
                ServerThread(make_gateway(settings)) as gw,
                httpx.Client(base_url=gw.url, timeout=60) as http,
            ):
                job = http.post(
                    "/v1/jobs",
                    json={
                        "model": "ollama",
                        "mode": "sync",
                        "payload": {"task": "enhance_prompt", "idea": "sad piano"},
                    },
                ).json()
                assert job["status"] == "succeeded", job.get("error")
                # the model's prompt, completed with the fields it did not name (genre, tempo...)
                prompt = job["result"]["result"]["prompt"]
                assert prompt == answer["prompt"] + ". classical, 66 BPM, sad, intimate"
                assert job["result"]["result"]["tempo_bpm"] == 66
                assert http.get(job["artifacts"][0]["url"]).json()["prompt"] == prompt
                bad = http.post("/v1/jobs", json={"model": "ollama", "payload": {"task": "sing"}})
                assert bad.status_code == 422 and bad.json()["error"]["field"].startswith("payload")
        finally:
            proc.stop()
