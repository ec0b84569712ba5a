"""The LLM helper against a real llama.cpp server running a real small model (SmolLM2-135M-Instruct):
the three tasks as jobs through a gateway and a worker and through `harmonia serve ollama`, a jen1 job
planned by the model, streaming, cancel mid-answer, the token cap, the time budget, a context
overflow and a model name the server does not serve. Skips, saying why, when the server or the model
is not here (see tests/llama_server.py). The failure modes a real server cannot be made to show
(a stall mid-answer, malformed streams, scripted invalid answers) are tested against the double,
tests/fake_ollama.py.

The model is tiny: these tests check structure and behaviour (valid, bounded answers, each within
its cap and budget), not musical taste. Answers are kept short (the tasks' own caps) so the whole
module takes about a minute on two cores.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile

from harmonia.config import Settings
from harmonia.engines.base import LocalContext
from harmonia.engines.ollama.backends import OpenAIClient
from harmonia.engines.ollama.client import BudgetExceeded, ContextOverflow, GenerationOptions, ModelMissing
from harmonia.engines.ollama.schemas import ENHANCE_SCHEMA, KEYS, METERS, lyrics_schema, plan_schema
from harmonia.engines.ollama.structured import answer_token_cap
from harmonia.engines.ollama.tasks import song_plan
from harmonia.engines.registry import Registry
from harmonia.music.songplan import SongPlan
from harmonia.music.syllables import count_syllables
from harmonia.redis_client import connect
from harmonia.worker import WorkerProcess
from helpers import ServerThread, free_port, make_gateway, wait_for
from llama_server import ALIAS, CONTEXT, LlamaServer, LlamaUnavailable

FINISHED = ("succeeded", "failed", "canceled")
TASKS: dict[str, dict[str, Any]] = {
    "enhance_prompt": {"task": "enhance_prompt", "idea": "rainy jazz cafe", "duration_s": 20, "seed": 1},
    "song_plan": {
        "task": "song_plan",
        "instructions": "a lo-fi hip hop beat with piano and soft drums",
        "overrides": {"duration_s": 30},
        "seed": 1,
    },
    "lyrics": {"task": "lyrics", "theme": "the sea at night", "structure": ["verse", "chorus"], "seed": 1},
}


@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaServer]:
    server = LlamaServer()
    try:
        server.start()
    except LlamaUnavailable as exc:
        pytest.skip(f"needs the real llama.cpp server and SmolLM2: {exc}")
    yield server
    server.stop()


@pytest.fixture
def client(llama: LlamaServer) -> Iterator[OpenAIClient]:
    with OpenAIClient(llama.url, ALIAS) as c:
        yield c


@pytest.fixture
def llm_settings(tmp_path: Path, redis_url: str, llama: LlamaServer) -> Settings:
    # production defaults, pointed at the real server as a new user would (HARMONIA_OLLAMA__*)
    return Settings(
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        ollama={"url": llama.url + "/v1", "api": "openai", "model": ALIAS},
    )


@pytest.fixture
def jobs(llm_settings: Settings) -> Iterator[httpx.Client]:
    """A gateway and a worker for the `ollama` and `jen1` queues, in this process."""
    proc = WorkerProcess(llm_settings, connect(llm_settings.redis_url or ""), ["ollama", "jen1"])
    proc.start()
    try:
        with (
            ServerThread(make_gateway(llm_settings)) as gw,
            httpx.Client(base_url=gw.url, timeout=30) as http,
        ):
            yield http
    finally:
        proc.stop()


def finished(http: httpx.Client, job_id: str, timeout: float = 150.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job = http.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in FINISHED else None

    return wait_for(done, timeout=timeout, interval=0.2)


def check_task_result(task: str, out: dict[str, Any]) -> None:
    """What every answer of the real model must be, whichever route it came by."""
    schema = {
        "enhance_prompt": ENHANCE_SCHEMA,
        "song_plan": plan_schema({}),
        "lyrics": lyrics_schema(["verse", "chorus"], 4, 60),
    }[task]
    assert out["attempts"] in (1, 2)
    # the grammar closed the answer before the cap sized to its schema: the cap never cut it
    assert out["done_reason"] == "stop"
    assert 0 < out["stats"]["completion_tokens"] <= answer_token_cap(schema)
    result = out["result"]
    if task == "enhance_prompt":
        assert 40 <= result["tempo_bpm"] <= 220 and len(result["prompt"]) >= 20
        assert f"{result['tempo_bpm']:g}" in result["prompt"]  # completed locally when it was not said
        assert len({i.lower() for i in result["instruments"]}) == len(result["instruments"]) >= 1
    elif task == "song_plan":
        plan = SongPlan.model_validate(result)
        assert plan.key in KEYS and plan.time_signature in METERS and plan.duration_s == 30
        bar_s = plan.beats_per_bar * 60 / plan.tempo_bpm
        assert abs(plan.implied_duration_s - 30) <= bar_s  # the bars were fitted here, not by the model
        assert 1 <= len(plan.instruments) and all(s.chords for s in plan.sections)
    else:
        assert [s["name"] for s in result["sections"]] == ["verse", "chorus"]
        for section in result["sections"]:
            assert len(section["lines"]) == 4
            assert all(line["syllables"] == count_syllables(line["text"]) for line in section["lines"])


# --- the client against the real server ---------------------------------------------------------


def test_streaming_arrives_token_by_token(client: OpenAIClient) -> None:
    messages = [{"role": "user", "content": "Name three musical instruments."}]
    chunks = list(client.stream_chat(messages, options=GenerationOptions(num_predict=24, temperature=0)))
    assert len(chunks) > 4 and [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert "".join(c.text for c in chunks).strip()
    final = chunks[-1]
    assert final.done_reason in ("stop", "length")
    assert 0 < final.stats["completion_tokens"] <= 24 and final.stats["prompt_tokens"] > 0


def test_a_task_stops_at_its_budget(client: OpenAIClient, llama: LlamaServer) -> None:
    # a song plan takes SmolLM2 several seconds here; a 1 s budget must end it at 1 s, and the
    # server must stop generating (the client hung up)
    started = time.monotonic()
    with pytest.raises(BudgetExceeded, match="song plan was not ready within its 1 s budget"):
        song_plan(client, "a long progressive rock epic", budget_s=1.0)
    assert time.monotonic() - started < 1.5
    wait_for(lambda: llama.busy_slots() == 0, timeout=5)


def test_context_overflow_is_a_clear_error(client: OpenAIClient) -> None:
    with pytest.raises(ContextOverflow) as info:
        song_plan(client, "la " * 6000)
    assert info.value.code == "context_overflow"
    assert f"({CONTEXT} tokens)" in str(info.value) and "llama.cpp `-c`" in str(info.value)


def test_a_model_the_server_does_not_serve_is_named_with_the_fix(llama: LlamaServer, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, ollama={"url": llama.url, "api": "openai", "model": "llama3.2"})
    entry = {m["name"]: m for m in Registry(settings).describe()}["ollama"]
    assert entry["available"] is False
    assert f"it serves '{ALIAS}'" in entry["reason"] and "HARMONIA_OLLAMA__MODEL" in entry["reason"]
    assert "--alias llama3.2" in entry["reason"]
    with OpenAIClient(llama.url, "llama3.2") as c, pytest.raises(ModelMissing) as info:
        c.check_ready()
    assert info.value.served == [ALIAS]
    # and jen1 says exactly why it planned with rules instead
    from harmonia.engines.jen1.engine import Jen1Engine
    from harmonia.engines.ollama.backends import build_llm_client
    from harmonia.engines.render.engine import RenderEngine

    jen1 = Jen1Engine(RenderEngine(), llm=build_llm_client(settings.ollama))
    res = jen1.run({"instructions": "a short piano tune", "duration_s": 3}, LocalContext())
    plan = json.loads(next(a for a in res.artifacts if a.name == "plan.json").data)
    assert plan["planner"] == "rules"
    assert any(n.startswith("LLM planner skipped (model 'llama3.2'") and ALIAS in n for n in plan["notes"])


# --- as jobs ------------------------------------------------------------------------------------


def test_the_three_tasks_as_jobs(jobs: httpx.Client) -> None:
    ids = {}
    for task, payload in TASKS.items():
        r = jobs.post("/v1/jobs", json={"model": "ollama", "payload": payload})
        assert r.status_code in (200, 201, 202), r.text
        ids[task] = r.json()["id"]
    for task, job_id in ids.items():
        job = finished(jobs, job_id)
        assert job["status"] == "succeeded", job["error"]
        check_task_result(task, job["result"])
        (artifact,) = job["artifacts"]
        assert jobs.get(artifact["url"]).json() == job["result"]["result"]


def test_a_job_canceled_mid_answer_stops_the_server(jobs: httpx.Client, llama: LlamaServer) -> None:
    payload = {**TASKS["song_plan"], "instructions": "a long progressive rock epic with many sections"}
    job_id = jobs.post("/v1/jobs", json={"model": "ollama", "payload": payload}).json()["id"]
    # the engine reports progress every 25 streamed chunks: then it is mid-answer
    wait_for(lambda: "chunks received" in jobs.get(f"/v1/jobs/{job_id}").json()["progress"]["message"], 60)
    assert llama.busy_slots() == 1
    assert jobs.post(f"/v1/jobs/{job_id}/cancel").status_code in (200, 202)
    # the worker hears of the cancel at the engine's next progress beat (or the lease keeper's)
    job = finished(jobs, job_id, timeout=30)
    assert job["status"] == "canceled"
    wait_for(lambda: llama.busy_slots() == 0, timeout=5)


def test_jen1_plans_with_the_real_model(jobs: httpx.Client) -> None:
    payload = {"instructions": "a calm lo-fi tune with piano and soft drums", "duration_s": 6, "seed": 3}
    job_id = jobs.post("/v1/jobs", json={"model": "jen1", "payload": payload}).json()["id"]
    job = finished(jobs, job_id)
    assert job["status"] == "succeeded", job["error"]
    files = {a["name"]: a["url"] for a in job["artifacts"]}
    plan = jobs.get(files["plan.json"]).json()
    assert plan["planner"] == "llm", plan["notes"]
    assert plan["notes"][0].startswith(f"planned by the LLM ({ALIAS}")
    assert plan["duration_s"] == 6 and plan["key"] in KEYS
    audio, rate = soundfile.read(io.BytesIO(jobs.get(files["mix.wav"]).content))
    assert abs(len(audio) / rate - 6) < 0.1 and abs(audio).max() > 0.01


# --- `harmonia serve ollama` --------------------------------------------------------------------


def test_serve_ollama_answers_the_three_tasks(llama: LlamaServer, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARMONIA_")}
    env.update(
        HARMONIA_OLLAMA__URL=llama.url,
        HARMONIA_OLLAMA__API="openai",
        HARMONIA_OLLAMA__MODEL=ALIAS,
        HARMONIA_DATA_DIR=str(tmp_path),
        HARMONIA_LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "harmonia", "serve", "ollama", "--port", str(port)], env=env
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:

            def up() -> bool:
                assert proc.poll() is None, "harmonia serve ollama exited"
                try:
                    return http.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(up, timeout=30, interval=0.1)
            ready = http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["model"] == ALIAS
            for task, payload in TASKS.items():
                r = http.post(f"/v1/{task}", json={k: v for k, v in payload.items() if k != "task"})
                assert r.status_code == 200, r.text
                check_task_result(task, r.json())
            metrics = http.get("/metrics").text
            for task in TASKS:
                assert f'harmonia_llm_requests_total{{outcome="ok",task="{task}"}} 1.0' in metrics
    finally:
        proc.terminate()
        proc.wait(10)
