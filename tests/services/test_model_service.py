"""The model service over a real uvicorn server on a loopback port, serving a tiny MusicGen."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest
import soundfile as sf
from pydantic import BaseModel

pytest.importorskip("torch")
pytest.importorskip("transformers")

from harmonia.config import MusicgenSettings, Settings
from harmonia.engines.base import EngineResult
from harmonia.engines.musicgen.engine import MusicgenEngine
from harmonia.engines.musicgen.tiny import make_tiny_musicgen
from harmonia.services.model import create_model_app
from helpers import ServerThread


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("service never became ready")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = make_tiny_musicgen(tmp_path_factory.mktemp("svc") / "tiny")
    settings = Settings(musicgen=MusicgenSettings(model=str(path), max_wait_ms=5), max_body_bytes=200_000)
    srv = ServerThread(create_model_app(MusicgenEngine(settings.musicgen), settings)).start()
    _wait_ready(srv.url)
    yield srv.url
    srv.stop()


def test_curl_shaped_call_returns_a_playable_wav(service: str) -> None:
    r = httpx.post(
        f"{service}/generate", json={"text": "solo piano melody", "duration_s": 2}, headers={"Accept": "*/*"},
        timeout=120,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    audio, sr = sf.read(io.BytesIO(r.content))
    assert sr == 32000 and audio.shape[0] == 2 * 32000
    assert float(np.sqrt(np.mean(audio**2))) > 1e-3
    assert int(r.headers["x-harmonia-seed"]) >= 0


def test_default_request_is_eight_seconds(service: str) -> None:
    r = httpx.post(f"{service}/generate", json={"text": "solo piano melody"}, timeout=120)
    assert r.status_code == 200
    assert sf.info(io.BytesIO(r.content)).duration == pytest.approx(8.0)


def test_json_mode_has_base64_audio_and_metadata(service: str) -> None:
    r = httpx.post(
        f"{service}/generate", json={"text": "jazz", "duration_s": 0.5, "seed": 7, "format": "flac"},
        headers={"Accept": "application/json"}, timeout=60,
    )  # fmt: skip
    body = r.json()
    assert r.status_code == 200 and body["content_type"] == "audio/flac"
    audio, sr = sf.read(io.BytesIO(base64.b64decode(body["audio_b64"])))
    assert sr == 32000 and audio.shape[0] == 16000
    assert body["output"]["seed"] == 7 and body["output"]["batch_size"] >= 1


def test_streaming_is_server_sent_events(service: str) -> None:
    events: list[tuple[str, dict]] = []
    with httpx.stream(
        "POST", f"{service}/generate", json={"text": "jazz", "duration_s": 2.5, "stream": True}, timeout=60
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((kind, json.loads(line.split(":", 1)[1])))
    kinds = [k for k, _ in events]
    assert "progress" in kinds and kinds.count("audio_chunk") >= 2 and kinds[-1] == "result"
    chunks = [d for k, d in events if k == "audio_chunk"]
    total = sum(sf.info(io.BytesIO(base64.b64decode(c["audio_b64"]))).frames for c in chunks)
    assert total == 2.5 * 32000
    assert events[-1][1]["output"]["duration_s"] == 2.5


def test_bad_input_is_422_with_the_field(service: str) -> None:
    for body, field in [
        ({"text": ""}, "text"),
        ({"text": "ok", "duration_s": -1}, "duration_s"),
        ({"text": "ok", "duration_s": 500}, "duration_s"),  # over max_duration_s: the engine says so
        ({"text": "ok", "top_k": "many"}, "top_k"),
        ({"prompt": ""}, "prompt"),  # an alias is named as sent
        ({"text": "ok", "output_format": "mp3"}, "output_format"),
        ({"text": "ok", "duration": 2, "duration_s": 3}, "duration_s"),  # two spellings that disagree
        ({"text": "ok", "durration": 2}, "durration"),  # unknown fields stay errors
    ]:
        r = httpx.post(f"{service}/generate", json=body, timeout=30)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["field"] == field
    r = httpx.post(f"{service}/generate", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_json"


def test_audiocraft_and_hosted_api_names_are_accepted(service: str) -> None:
    """`duration` (audiocraft's set_generation_params, hosted MusicGen APIs), `prompt`,
    `classifier_free_guidance` / `cfg_coef` and `output_format` mean the fields of the same knob."""
    body = {
        "prompt": "jazz",
        "duration": 0.5,
        "classifier_free_guidance": 3,
        "output_format": "flac",
        "seed": 3,
    }
    r = httpx.post(f"{service}/generate", json=body, headers={"Accept": "application/json"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["content_type"] == "audio/flac" and r.json()["output"]["duration_s"] == 0.5
    same = {"text": "jazz", "duration_s": 0.5, "guidance_scale": 3, "format": "flac", "seed": 3}
    r2 = httpx.post(f"{service}/generate", json=same, headers={"Accept": "application/json"}, timeout=60)
    assert r2.json()["audio_b64"] == r.json()["audio_b64"]
    # both spellings with the same value are fine; different values are not
    r = httpx.post(
        f"{service}/generate", json={"text": "x", "duration": 0.5, "duration_s": 0.5, "cfg_coef": 1}
    )
    assert r.status_code == 200, r.text
    r = httpx.post(f"{service}/generate", json={"text": "x", "prompt": "y"})
    assert r.status_code == 422 and "text and prompt" in r.json()["error"]["message"]
    # documented: the input schema lists the other names
    props = httpx.get(f"{service}/info").json()["input_schema"]["properties"]
    assert (
        props["duration_s"]["x-aliases"] == ["duration"]
        and "`duration`" in props["duration_s"]["description"]
    )
    assert props["guidance_scale"]["x-aliases"] == ["classifier_free_guidance", "cfg_coef"]
    assert props["text"]["x-aliases"] == ["prompt"] and props["format"]["x-aliases"] == ["output_format"]


def test_a_body_that_is_not_json_is_415_and_nan_is_422(service: str) -> None:
    r = httpx.post(f"{service}/generate", content=b'{"text": "x"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]
    r = httpx.post(f"{service}/generate", data={"text": "x"})  # a form, as `curl -d` sends without -H
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = httpx.post(
        f"{service}/generate",
        content=b'{"text": "x", "duration_s": NaN}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"] == {
        "code": "invalid_input", "message": "duration_s: must be a finite number", "field": "duration_s"
    }  # fmt: skip
    deep = b'{"text": "x", "seed": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = httpx.post(f"{service}/generate", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_json"


def test_huge_body_is_413(service: str) -> None:
    r = httpx.post(f"{service}/generate", json={"text": "ok", "audio_prompt": "A" * 300_000}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_health_info_and_metrics(service: str) -> None:
    assert httpx.get(f"{service}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{service}/readyz").json()["state"] in ("READY", "BUSY")
    info = httpx.get(f"{service}/info").json()
    assert info["info"]["device"] == "cpu" and info["info"]["dtype"] == "float32"
    assert info["input_schema"]["properties"]["text"]["maxLength"] == 2000
    httpx.post(f"{service}/generate", json={"text": "ok", "duration_s": 0.5}, timeout=60)
    text = httpx.get(f"{service}/metrics").text
    assert 'harmonia_model_requests_total{status="200"}' in text
    assert 'harmonia_model_requests_total{status="422"}' in text or "harmonia_model_batch_size_count" in text
    assert "harmonia_engine_batches" in text and "harmonia_model_realtime_factor_bucket" in text
    assert 'harmonia_model_state{state="READY"} 1.0' in text
    # its OpenAPI page loads Swagger UI from the service itself (no CDN)
    docs = httpx.get(f"{service}/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn." not in docs
    assert httpx.get(f"{service}/docs-assets/swagger-ui-bundle.js").status_code == 200


class _GatedInput(BaseModel):
    text: str


class _GatedEngine:
    """A stand-in engine whose load waits for the test: the service is generic over engines."""

    name: ClassVar[str] = "gated"
    input_model: ClassVar[type[BaseModel]] = _GatedInput

    def __init__(self) -> None:
        self.gate = threading.Event()

    def load(self) -> None:
        self.gate.wait(30)

    def run(self, payload: BaseModel, ctx: Any) -> EngineResult:
        return EngineResult(output={"echo": payload.text})

    def info(self) -> dict[str, Any]:
        return {}


def test_readyz_is_503_until_loaded_and_failed_load_is_reported(tmp_path: Path) -> None:
    engine = _GatedEngine()
    srv = ServerThread(create_model_app(engine, Settings())).start()
    try:
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
        r = httpx.get(f"{srv.url}/readyz")
        assert r.status_code == 503 and r.json()["state"] == "STARTING"
        assert httpx.post(f"{srv.url}/generate", json={"text": "x"}).status_code == 503
        engine.gate.set()
        _wait_ready(srv.url)
        assert httpx.post(f"{srv.url}/generate", json={"text": "x"}).json()["output"] == {"echo": "x"}
    finally:
        srv.stop()
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    failures: list[BaseException] = []
    bad = MusicgenEngine(MusicgenSettings(model=str(tmp_path)))
    srv = ServerThread(create_model_app(bad, Settings(), on_load_failure=failures.append)).start()
    try:
        deadline = time.monotonic() + 30
        while not failures and time.monotonic() < deadline:
            time.sleep(0.05)
        r = httpx.get(f"{srv.url}/readyz")
        assert r.status_code == 503 and r.json()["state"] == "FAILED"
        assert "not MusicGen" in r.json()["error"]["message"]
    finally:
        srv.stop()
