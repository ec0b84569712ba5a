"""jen1 with its optional engines: the LLM planner (a protocol-faithful fake Ollama daemon), and a
MusicGen backing track (a tiny random-weight checkpoint through the real engine). Each absent or
failing engine must leave a working, offline jen1 that says what it fell back to."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from fake_ollama import FakeOllama, closed_port_url
from harmonia.audio import encode
from harmonia.audio.features import estimate_tempo
from harmonia.audio.loudness import integrated_lufs
from harmonia.config import OllamaSettings, Settings
from harmonia.engines.base import LocalContext
from harmonia.engines.jen1.engine import Jen1Engine
from harmonia.engines.ollama.backends import build_llm_client
from harmonia.engines.registry import Registry
from harmonia.engines.render.engine import RenderEngine

PLAN = {
    "title": "Harbour Lights",
    "tempo_bpm": "110 BPM",
    "key": "Am",
    "time_signature": "4/4",
    "sections": [
        {"name": "Intro", "bars": 2, "chords": "Am F"},
        {"name": "Verse", "bars": 4, "chords": ["Am", "F", "C", "E7"]},
        {"name": "Outro", "bars": 2, "chords": ["Bb", "Am"]},
    ],
    "instruments": [
        {"name": "Rhodes", "role": "chords"},
        {"name": "Upright bass", "role": "bass"},
        {"name": "drum kit", "role": "drums"},
        {"name": "theremin", "role": "lead"},
    ],
    "mood": "melancholic",
    "genre": "lo-fi",
    "duration_s": 18,
}


@pytest.fixture(scope="module")
def render() -> RenderEngine:
    return RenderEngine()


@pytest.fixture(scope="module")
def fake() -> Any:
    with FakeOllama() as daemon:
        yield daemon


def _files(res: Any) -> dict[str, Any]:
    return {a.name: a for a in res.artifacts}


def test_llm_plans_with_a_schema_and_jen1_follows_it(render: RenderEngine, fake: FakeOllama) -> None:
    fake.reset()
    fake.push(json.dumps(PLAN))
    jen1 = Jen1Engine(render, llm=build_llm_client(OllamaSettings(url=fake.url)))
    res = jen1.run(
        {"instructions": "a melancholic lo-fi tune about a harbour", "duration_s": 18}, LocalContext()
    )
    plan = json.loads(_files(res)["plan.json"].data)
    assert plan["planner"] == "llm" and res.output["planner"] == "llm"
    # the request asked for JSON constrained by the SongPlan schema, with the user's duration fixed
    chat = fake.generations()[-1].body
    assert chat["format"]["title"] == "SongPlan" and "sections" in chat["format"]["properties"]
    assert '"duration_s": 18' in chat["messages"][-1]["content"]
    # the plan is what the LLM said, normalised, with every adjustment stated
    assert plan["tempo_bpm"] == 110 and plan["key"] == "A minor" and plan["title"] == "Harbour Lights"
    assert [s["chords"] for s in plan["sections"]][1] == ["Am", "F", "C", "E7"]
    catalog = {(c["name"], c["role"]) for c in plan["catalog"]}
    assert {("electric piano", "harmony"), ("double bass", "bass"), ("drums", "drums")} <= catalog
    assert any("theremin" in n for n in plan["notes"])  # not in the SoundFont: substituted, and said
    assert any("Bb" in n for n in plan["notes"])  # chromatic chord approximated, and said
    score = json.loads(_files(res)["score.json"].data)
    assert score["chords"][:6] == ["i", "i", "i", "VI", "III", "V"] or score["chords"][2:6] == [
        "i",
        "VI",
        "III",
        "V",
    ]
    audio = encode.decode(_files(res)["mix.wav"].data)
    assert audio.duration_s == pytest.approx(18, rel=0.05)
    assert abs(integrated_lufs(audio.audio, audio.sample_rate) + 14) <= 1
    found = estimate_tempo(audio.audio, audio.sample_rate)
    assert min(abs(found - 110 * k) / (110 * k) for k in (0.5, 1, 2)) <= 0.04


def test_invalid_llm_answers_fall_back_to_rules(render: RenderEngine, fake: FakeOllama) -> None:
    fake.reset()
    fake.push(
        "not json at all", json.dumps({**PLAN, "sections": [{"name": "verse", "bars": 4, "chords": ["IV"]}]})
    )
    jen1 = Jen1Engine(render, llm=build_llm_client(OllamaSettings(url=fake.url)))
    res = jen1.run({"instructions": "lo-fi beat with piano", "duration_s": 5}, LocalContext())
    plan = json.loads(_files(res)["plan.json"].data)
    assert plan["planner"] == "rules"
    assert any(n.startswith("LLM plan rejected") and "roman numeral" in n for n in plan["notes"])
    assert len(fake.generations()) == 2  # asked, then one repair request


def test_unreachable_llm_is_skipped(render: RenderEngine) -> None:
    jen1 = Jen1Engine(render, llm=build_llm_client(OllamaSettings(url=closed_port_url(), timeout_s=2)))
    res = jen1.run({"instructions": "render violin", "duration_s": 3}, LocalContext())
    plan = json.loads(_files(res)["plan.json"].data)
    assert plan["planner"] == "rules" and any("LLM planner skipped" in n for n in plan["notes"])
    # the next job does not wait for the dead daemon again
    res = jen1.run({"instructions": "render violin", "duration_s": 3}, LocalContext())
    assert any("moments ago" in n for n in json.loads(_files(res)["plan.json"].data)["notes"])


def test_factory_builds_jen1_offline_without_optional_engines(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path, musicgen={"model": str(tmp_path / "absent")})
    jen1 = Registry(settings).engine("jen1")
    info = jen1.info()
    assert info["planner"] == "rules" and info["musicgen"] is False and info["singer"] is False
    res = jen1.run({"instructions": "lo-fi beat", "duration_s": 4, "engine": "musicgen"}, LocalContext())
    assert any("no MusicGen engine" in n for n in res.output["decisions"])


@pytest.fixture(scope="module")
def musicgen(tiny_musicgen: Any) -> Any:
    from harmonia.config import MusicgenSettings
    from harmonia.engines.musicgen.engine import MusicgenEngine, MusicgenOptions

    engine = MusicgenEngine(
        MusicgenSettings(model=str(tiny_musicgen), max_wait_ms=0),
        options=MusicgenOptions(window_s=4.0, overlap_s=1.0, tick_every=10),
    )
    engine.load()
    yield engine
    engine.close()


def test_musicgen_backing_continues_across_sections(render: RenderEngine, musicgen: Any) -> None:
    calls: list[Any] = []

    def provider() -> Any:
        calls.append(1)
        return musicgen

    jen1 = Jen1Engine(render, musicgen=provider)
    payload = {
        "instructions": "lo-fi hip hop beat with piano",
        "duration_s": 12,
        "sections": ["intro", "verse", "outro"],
        "engine": "auto",
        "stems": True,
        "seed": 5,
    }
    res = jen1.run(payload, LocalContext())
    files = _files(res)
    backing = next(p for p in res.output["parts"] if p["engine"] == "musicgen")
    assert "lo-fi hip hop" in backing["prompt"] and "bpm" in backing["prompt"]
    sections = backing["sections"]
    assert len(sections) >= 2 and not sections[0]["continued"] and all(s["continued"] for s in sections[1:])
    assert sum(s["seconds"] for s in sections) == pytest.approx(12, abs=0.2)
    # the backing replaced chords, bass and drums; the lead is still the SoundFont piano
    roles = {(p["engine"], p["role"]) for p in res.output["parts"]}
    assert roles == {("musicgen", "backing"), ("render", "melody")}
    stem = encode.decode(next(a.data for n, a in files.items() if "musicgen-backing" in n))
    assert stem.duration_s == pytest.approx(12, rel=0.01) and np.any(stem.audio)
    mix = encode.decode(files["mix.wav"].data)
    assert abs(integrated_lufs(mix.audio, mix.sample_rate) + 14) <= 1 and np.max(np.abs(mix.audio)) < 0.9
    # engine=render never asks MusicGen
    before = len(calls)
    jen1.run({**payload, "engine": "render", "stems": False}, LocalContext())
    assert len(calls) == before


def test_musicgen_failure_falls_back_to_soundfont(render: RenderEngine) -> None:
    from harmonia.errors import EngineUnavailable

    def broken() -> Any:
        raise EngineUnavailable("model not downloaded")

    jen1 = Jen1Engine(render, musicgen=broken)
    res = jen1.run(
        {"instructions": "lo-fi beat with piano", "duration_s": 5, "engine": "musicgen"}, LocalContext()
    )
    assert any("MusicGen backing failed" in n for n in res.output["decisions"])
    assert {p["engine"] for p in res.output["parts"]} == {"render"}
    assert {p["role"] for p in res.output["parts"]} >= {"drums", "bass"}
