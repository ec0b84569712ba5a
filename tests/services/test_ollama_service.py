"""`harmonia serve ollama`'s app, run by a real uvicorn in a thread, in front of the fake daemon."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from fake_ollama import Answer, FakeOllama, ServerThread, closed_port_url
from harmonia.config import Settings
from harmonia.engines.ollama.backends import OllamaClient
from harmonia.engines.ollama.engine import OllamaEngine
from harmonia.services.ollama import build_llm_app, create_llm_app

PLAN = {
    "title": "Night Drive",
    "tempo_bpm": 90,
    "key": "F minor",
    "sections": [
        {"name": "intro", "bars": 4, "chords": ["Fm", "Db"]},
        {"name": "verse", "bars": 8, "chords": ["Fm"]},
    ],
    "instruments": [{"name": "synth bass", "role": "bass"}, {"name": "drum machine", "role": "drums"}],
    "genre": "synthwave",
    "duration_s": 32,
}


@pytest.fixture(scope="module")
def daemon() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


def serve(url: str, model: str = "llama3.2", **settings: object) -> ServerThread:
    client = OllamaClient(url, model, timeout_s=1.0, retry_wait_s=0.01)
    app = create_llm_app(
        OllamaEngine(client, max_prompt_chars=2000), Settings(**settings), on_shutdown=client.close
    )
    return ServerThread(app)


@pytest.fixture
def http(daemon: FakeOllama) -> Iterator[httpx.Client]:
    daemon.reset()
    with serve(daemon.url, max_body_bytes=65536) as base, httpx.Client(base_url=base, timeout=10) as h:
        yield h


def test_task_endpoints(daemon: FakeOllama, http: httpx.Client) -> None:
    daemon.push(json.dumps({"prompt": "synthwave night drive, 90 BPM", "tempo_bpm": 90}))
    r = http.post("/v1/enhance_prompt", json={"idea": "night drive"})
    assert r.status_code == 200 and r.json()["result"]["tempo_bpm"] == 90

    daemon.push("oops, not json", json.dumps(PLAN))
    r = http.post(
        "/v1/song_plan", json={"instructions": "a synthwave night drive", "overrides": {"key": "Fm"}}
    )
    body = r.json()
    assert r.status_code == 200 and body["attempts"] == 2 and body["result"]["key"] == "F minor"
    assert body["result"]["sections"][0] == {"name": "intro", "bars": 4, "chords": ["Fm", "Db"], "lyrics": []}

    daemon.push(json.dumps({"title": "T", "sections": [{"name": "verse", "lines": ["city lights below"]}]}))
    r = http.post("/v1/lyrics", json={"theme": "neon", "structure": ["verse"]})
    assert r.status_code == 200
    assert r.json()["result"]["sections"][0]["lines"] == [{"text": "city lights below", "syllables": 5}]

    metrics = http.get("/metrics").text
    assert 'harmonia_llm_requests_total{outcome="ok",task="song_plan"} 1.0' in metrics
    assert 'harmonia_llm_repairs_total{task="song_plan"} 1.0' in metrics
    assert 'harmonia_llm_tokens_total{kind="completion",task="lyrics"}' in metrics


def test_bad_input(http: httpx.Client) -> None:
    r = http.post("/v1/song_plan", json={"instructions": "x" * 2001})
    assert r.status_code == 422 and r.json()["error"]["field"] == "instructions"
    assert "limit is 2000" in r.json()["error"]["message"]
    r = http.post("/v1/lyrics", json={"theme": "t", "lines_per_section": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "lines_per_section"
    r = http.post("/v1/enhance_prompt", json={"idea": "y" * 70_000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_invalid_answers_and_broken_daemon(daemon: FakeOllama, http: httpx.Client) -> None:
    daemon.push('{"nope": 1}', '{"still": "wrong"}')
    r = http.post("/v1/song_plan", json={"instructions": "anything"})
    assert r.status_code == 502 and r.json()["error"]["code"] == "invalid_answer"
    assert "invalid after one repair" in r.json()["error"]["message"]
    daemon.push(Answer("some answer text here", mode="error"))
    r = http.post("/v1/enhance_prompt", json={"idea": "x"})
    assert r.status_code == 502 and "running the model" in r.json()["error"]["message"]
    daemon.push(Answer("slow", mode="slow", delay_s=2.0))
    r = http.post("/v1/enhance_prompt", json={"idea": "x"})
    assert r.status_code == 504 and r.json()["error"]["code"] == "llm_timeout"
    daemon.push(Answer(mode="status", status=400, error="the input length exceeds the context length"))
    r = http.post("/v1/lyrics", json={"theme": "x"})
    assert r.status_code == 502 and r.json()["error"]["code"] == "context_overflow"
    assert "larger context" in r.json()["error"]["message"]


def test_task_budget_is_504(daemon: FakeOllama) -> None:
    daemon.reset()
    client = OllamaClient(daemon.url, "llama3.2", timeout_s=30)
    app = create_llm_app(OllamaEngine(client, budget_s=0.5), Settings(), on_shutdown=client.close)
    daemon.push(Answer(json.dumps(PLAN), mode="slow", delay_s=0.2))
    with ServerThread(app) as base, httpx.Client(base_url=base, timeout=10) as h:
        r = h.post("/v1/song_plan", json={"instructions": "x"})
        assert r.status_code == 504 and r.json()["error"]["code"] == "llm_budget_exceeded"
        assert "within its 0.5 s budget" in r.json()["error"]["message"]
        assert h.get("/info").json()["budget_s"] == 0.5


def test_health_and_readiness(daemon: FakeOllama, http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["version"] == daemon.version
    assert http.get("/info").json()["backend"] == "ollama"


def test_model_missing_is_503_with_the_pull_hint(daemon: FakeOllama) -> None:
    with serve(daemon.url, model="qwen9:7b") as base, httpx.Client(base_url=base, timeout=10) as h:
        r = h.get("/readyz")
        assert r.status_code == 503 and "ollama pull qwen9:7b" in r.json()["error"]["message"]
        r = h.post("/v1/enhance_prompt", json={"idea": "x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_missing"
        assert "ollama pull qwen9:7b" in r.json()["error"]["message"]
        assert h.get("/healthz").status_code == 200


def test_daemon_down_is_503_with_the_url() -> None:
    down = closed_port_url()
    with serve(down) as base, httpx.Client(base_url=base, timeout=10) as h:
        for r in (h.get("/readyz"), h.post("/v1/lyrics", json={"theme": "t"})):
            assert r.status_code == 503 and r.json()["error"]["code"] == "dependency_down"
            assert down in r.json()["error"]["message"]


def test_build_llm_app_from_settings(daemon: FakeOllama) -> None:
    daemon.reset()
    app = build_llm_app(Settings(ollama={"url": daemon.url + "/v1", "api": "openai", "timeout_s": 5}))
    with ServerThread(app) as base, httpx.Client(base_url=base, timeout=10) as h:
        assert h.get("/info").json()["backend"] == "openai"
        daemon.push(json.dumps({"prompt": "p"}))
        assert h.post("/v1/enhance_prompt", json={"idea": "x"}).json()["result"]["prompt"] == "p"
    assert daemon.generations()[-1].path == "/v1/chat/completions"
