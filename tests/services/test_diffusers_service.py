"""`harmonia serve acestep|stable-audio`: the model service over real uvicorn servers on tiny
checkpoints (WAV of the requested duration and rate, JSON and SSE answers with a progress event per
diffusion step, 422 naming the field, health/readiness/info/metrics), and the CLI: `make-tiny`
then `serve` in a subprocess, and one line naming the path for a missing or foreign checkpoint."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import soundfile as sf

pytest.importorskip("diffusers")

from harmonia.config import Settings
from harmonia.engines.acestep.tiny import make_tiny_acestep
from harmonia.engines.stable_audio.tiny import make_tiny_stable_audio
from harmonia.services.model import build_served_engine, create_model_app
from helpers import ServerThread, free_port, wait_for

#: model -> (tiny builder, sample rate, a valid request)
FAMILIES = {
    "acestep": (
        make_tiny_acestep,
        48000,
        {"prompt": "synth pop", "lyrics": "[verse]\nla la", "duration_s": 1.5},
    ),
    "stable-audio": (make_tiny_stable_audio, 44100, {"prompt": "drum loop", "duration_s": 1.5, "steps": 6}),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    name = request.param
    make, rate, body = FAMILIES[name]
    settings = Settings(max_body_bytes=200_000)
    getattr(settings, name.replace("-", "_")).model = str(make(tmp_path_factory.mktemp(name) / "tiny"))
    with ServerThread(create_model_app(build_served_engine(name, settings), settings)) as server:
        wait_for(lambda: httpx.get(server.url + "/readyz").status_code == 200, timeout=60)
        yield name, server.url, rate, body


def test_generate_answers_a_wav_of_the_requested_duration(service: tuple) -> None:
    _, url, rate, body = service
    r = httpx.post(f"{url}/generate", json={**body, "seed": 4}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav" and r.headers["x-harmonia-seed"] == "4"
    audio, sr = sf.read(io.BytesIO(r.content))
    assert sr == rate and audio.shape == (round(1.5 * rate), 2)
    again = httpx.post(f"{url}/generate", json={**body, "seed": 4}, timeout=60)
    assert again.content == r.content  # same seed, same bytes, over HTTP too


def test_json_answer_has_the_audio_and_metadata(service: tuple) -> None:
    _, url, rate, body = service
    r = httpx.post(
        f"{url}/generate", json={**body, "format": "flac", "duration_s": 1.25},
        headers={"Accept": "application/json"}, timeout=60,
    )  # fmt: skip
    data = r.json()
    assert r.status_code == 200 and data["content_type"] == "audio/flac"
    audio, sr = sf.read(io.BytesIO(base64.b64decode(data["audio_b64"])))
    assert sr == rate and audio.shape[0] == round(1.25 * rate)
    assert data["output"]["sample_rate"] == rate and data["output"]["batch_size"] >= 1


def test_event_stream_has_a_progress_event_per_step(service: tuple) -> None:
    _, url, _, body = service
    events: list[tuple[str, dict]] = []
    with httpx.stream(
        "POST",
        f"{url}/generate",
        json={**body, "steps": 5},
        headers={"Accept": "text/event-stream"},
        timeout=60,
    ) as r:
        kind = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line.split(":", 1)[1])))
    steps = [d["message"] for k, d in events if k == "progress"]
    assert steps == [f"step {i}/5" for i in range(1, 6)]
    assert events[-1][0] == "result" and events[-1][1]["output"]["steps"] == 5


def test_bad_input_is_422_naming_the_field(service: tuple) -> None:
    name, url, _, body = service
    cases = [
        ({**body, "prompt": " "}, "prompt"),
        ({**body, "duration_s": -1}, "duration_s"),
        ({**body, "steps": 0}, "steps"),
        ({**body, "seed": "x"}, "seed"),
        ({"text": "musicgen's field"}, "prompt"),
    ]
    if name == "acestep":
        cases += [
            ({**body, "guidance_scale": 3.0}, "guidance_scale"),  # a turbo checkpoint: distilled
            ({**body, "repaint_start_s": 1.0}, "repaint_start_s"),  # nothing to repaint
            ({**body, "audio": "%%%"}, "audio"),
        ]
    else:
        cases += [({**body, "duration_s": 10}, "duration_s")]  # past the checkpoint's window
    for payload, field in cases:
        r = httpx.post(f"{url}/generate", json=payload, timeout=30)
        assert r.status_code == 422, (payload, r.text)
        assert r.json()["error"]["field"] == field, payload


def test_health_readiness_info_and_metrics(service: tuple) -> None:
    name, url, rate, body = service
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{url}/readyz").json()["state"] in ("READY", "BUSY")
    info = httpx.get(f"{url}/info").json()
    assert info["engine"] == name and info["info"]["sample_rate"] == rate and info["info"]["device"] == "cpu"
    assert "prompt" in info["input_schema"]["properties"]
    httpx.post(f"{url}/generate", json=body, timeout=60)
    text = httpx.get(f"{url}/metrics").text
    assert 'harmonia_model_requests_total{status="200"}' in text
    assert "harmonia_engine_pipeline_calls" in text and "harmonia_model_realtime_factor_bucket" in text


def harmonia(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harmonia", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_make_tiny_then_serve_from_the_command_line(tmp_path: Path) -> None:
    made = harmonia("make-tiny", "acestep", str(tmp_path / "tiny"))
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "tiny" / "model_index.json").is_file()
    port = free_port()
    serve = ["serve", "acestep", "--model", str(tmp_path / "tiny"), "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harmonia", *serve], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(url + "/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=90)
        r = httpx.post(f"{url}/generate", json={"prompt": "folk", "duration_s": 1.0}, timeout=60)
        assert r.status_code == 200 and sf.info(io.BytesIO(r.content)).duration == pytest.approx(1.0)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["acestep", "stable-audio"])
def test_serve_with_a_missing_or_foreign_checkpoint_exits_with_one_line(engine: str, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    other = "StableAudioPipeline" if engine == "acestep" else "AceStepPipeline"
    (foreign / "model_index.json").write_text(json.dumps({"_class_name": other}))
    for path, reason in [(tmp_path / "missing", "does not exist"), (foreign, f"is a '{other}' checkpoint")]:
        r = harmonia("serve", engine, "--model", str(path), "--port", str(free_port()), timeout=60)
        assert r.returncode == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and reason in lines[0], r.stderr
        assert "Traceback" not in r.stderr


def test_make_tiny_names_what_it_knows(tmp_path: Path) -> None:
    r = harmonia("make-tiny", "bark", str(tmp_path))
    assert r.returncode == 2 and "musicgen, acestep, stable-audio" in r.stderr and "Traceback" not in r.stderr
