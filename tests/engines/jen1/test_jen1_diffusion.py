"""jen1 with the diffusion models (tiny random checkpoints through the real engines): a Stable Audio
backing track in clips under the checkpoint's window, an ACE-Step instrumental backing, the whole
song from ACE-Step when lyrics are sung, and the SoundFont fallback (said in plan.json) when the
model is missing or fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")

from harmonia.audio import encode
from harmonia.config import AceStepSettings, Settings, StableAudioSettings
from harmonia.engines.acestep.engine import AceStepEngine
from harmonia.engines.base import LocalContext
from harmonia.engines.jen1.engine import Jen1Engine
from harmonia.engines.registry import Registry
from harmonia.engines.render.engine import RenderEngine
from harmonia.engines.stable_audio.engine import StableAudioEngine
from harmonia.errors import EngineUnavailable

SONG = {
    "instructions": "an upbeat pop song about the sea",
    "lyrics": "the sea is wide\nthe sea is blue\n\nwe sail away\nand start anew",
    "sections": ["intro", "verse", "chorus"],
    "duration_s": 8,
    "seed": 3,
}


@pytest.fixture(scope="module")
def render() -> RenderEngine:
    return RenderEngine()


@pytest.fixture(scope="module")
def acestep(tiny_acestep: Path) -> Any:
    engine = AceStepEngine(AceStepSettings(model=str(tiny_acestep), max_wait_ms=0))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def stable_audio(tiny_stable_audio: Path) -> Any:
    engine = StableAudioEngine(StableAudioSettings(model=str(tiny_stable_audio), max_wait_ms=0))
    yield engine
    engine.close()


def plan_of(result: Any) -> dict[str, Any]:
    return json.loads(next(a.data for a in result.artifacts if a.name == "plan.json"))


def stem(result: Any, part: str) -> encode.Decoded:
    return encode.decode(next(a.data for a in result.artifacts if part in a.name))


def test_stable_audio_backing_in_clips_under_its_window(render: RenderEngine, stable_audio: Any) -> None:
    jen1 = Jen1Engine(render, stable_audio=lambda: stable_audio)
    payload = {"instructions": "lo-fi hip hop beat with piano", "duration_s": 8, "engine": "stable-audio",
               "sections": ["verse", "outro"], "stems": True, "seed": 5}  # fmt: skip
    res = jen1.run(payload, LocalContext())
    backing = next(p for p in res.output["parts"] if p["engine"] == "stable-audio")
    assert "lo-fi hip hop" in backing["prompt"] and len(backing["clips"]) >= 3  # sections split
    assert max(c["seconds"] for c in backing["clips"]) < 2.97  # the tiny checkpoint's window
    assert sum(c["seconds"] for c in backing["clips"]) == pytest.approx(8, abs=0.3)
    assert {(p["engine"], p["role"]) for p in res.output["parts"]} == {
        ("stable-audio", "backing"),
        ("render", "melody"),
    }
    audio = stem(res, "stable-audio-backing")
    assert audio.duration_s == pytest.approx(8, rel=0.01) and np.any(audio.audio)
    assert "backing track: Stable Audio (asked for)" in " ".join(plan_of(res)["notes"])


def test_acestep_sings_the_whole_song_when_lyrics_are_asked_for(render: RenderEngine, acestep: Any) -> None:
    jen1 = Jen1Engine(render, acestep=lambda: acestep)
    assert jen1.info()["generators"] == ["acestep"]
    res = jen1.run({**SONG, "stems": True}, LocalContext())
    [part] = res.output["parts"]
    assert part["engine"] == "acestep" and part["role"] == "song"
    assert "[verse]\nthe sea is wide" in part["lyrics"] and "song with vocals" in part["prompt"]
    notes = " ".join(plan_of(res)["notes"])
    assert "the whole song, vocals included, was made by ACE-Step" in notes
    mix = encode.decode(next(a.data for a in res.artifacts if a.name == "mix.wav"))
    assert mix.duration_s == pytest.approx(8, abs=0.05) and np.any(mix.audio)
    # asked for by name without lyrics to sing: an instrumental ACE-Step backing under SoundFont parts
    res = jen1.run({"instructions": "synthwave groove", "duration_s": 5, "engine": "acestep"}, LocalContext())
    backing = next(p for p in res.output["parts"] if p["engine"] == "acestep")
    assert backing["role"] == "backing" and backing["lyrics"] == ""
    assert {p["engine"] for p in res.output["parts"]} == {"acestep", "render"}


def test_missing_or_failing_models_fall_back_and_say_so(render: RenderEngine) -> None:
    def broken() -> Any:
        raise EngineUnavailable("checkpoint not downloaded")

    jen1 = Jen1Engine(render, acestep=broken)
    res = jen1.run(SONG, LocalContext())
    assert any("ACE-Step song failed (checkpoint not downloaded)" in n for n in res.output["decisions"])
    assert {p["engine"] for p in res.output["parts"]} == {"render"}
    res = Jen1Engine(render).run({**SONG, "engine": "stable-audio"}, LocalContext())
    assert any("no Stable Audio engine is available" in n for n in res.output["decisions"])


def test_factory_offers_a_local_checkpoint_to_jen1(tmp_path: Path, tiny_acestep: Path) -> None:
    settings = Settings(data_dir=tmp_path, musicgen={"model": str(tmp_path / "absent")})
    settings.acestep.model = str(tiny_acestep)
    jen1 = Registry(settings).engine("jen1")
    assert jen1.info()["generators"] == ["acestep"]  # stable-audio's hub id is not cached here
