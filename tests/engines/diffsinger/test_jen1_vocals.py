"""jen1 sings: with a DiffSinger voicebank (a tiny random-weight one, real ONNX pipeline) and lyrics,
the melody of the sections with lyrics goes to the singer, laid word by word on the melody's notes,
and the lead instrument keeps the rest; words the voicebank cannot say become a stated vocalise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diffsinger_fixtures import *  # noqa: F403 - the session fixtures (tiny voicebanks)

from harmonia.audio import encode
from harmonia.audio.loudness import integrated_lufs
from harmonia.engines.base import LocalContext
from harmonia.engines.jen1.engine import Jen1Engine
from harmonia.engines.render.engine import RenderEngine


def test_lyrics_are_sung_by_diffsinger(basic_engine: Any) -> None:
    asked: list[Any] = []

    class Spy:  # the real engine, with its requests recorded
        voicebank = basic_engine.voicebank

        def run(self, payload: Any, ctx: Any) -> Any:
            asked.append(payload)
            return basic_engine.run(payload, ctx)

    jen1 = Jen1Engine(RenderEngine(), singer=Spy)
    payload = {
        "instructions": "a folk song with a female voice",
        "tempo_bpm": 100,
        "sections": [
            {"name": "intro", "bars": 1},
            {"name": "verse", "bars": 4},
            {"name": "outro", "bars": 1},
        ],
        "lyrics": "la li la\nka sa to seaside",
        "stems": True,
        "seed": 3,
    }
    res = jen1.run(payload, LocalContext())
    files = {a.name: a for a in res.artifacts}
    vocals = next(p for p in res.output["parts"] if p["engine"] == "diffsinger")
    assert vocals["sections"] == ["verse"] and vocals["notes"] > 3
    notes = asked[0].notes
    sung = [n.lyric for n in notes if n.lyric != "-"]
    assert sung[:5] == ["la", "li", "la", "ka", "sa"]
    assert "seaside" not in sung and any("seaside" in d for d in res.output["decisions"])
    score = json.loads(files["score.json"].data)
    verse = next(s for s in score["sections"] if s["name"] == "verse")
    melody = [n for n in score["notes"] if n["role"] == "melody"]
    in_verse = [n for n in melody if verse["start_s"] <= n["start_s"] < verse["end_s"]]
    assert sorted(n.note for n in notes) == sorted(n["pitch"] for n in in_verse)
    # the instrument keeps the melody outside the verse
    lead = next(p for p in res.output["parts"] if p["role"] == "melody")
    assert lead["engine"] == "render" and lead["notes"] == len(melody) - len(in_verse)
    stem = encode.decode(next(a.data for n, a in files.items() if n.endswith("-vocals.wav")))
    sr = stem.sample_rate
    energy = np.abs(stem.audio).mean(axis=1)
    inside = energy[int(verse["start_s"] * sr) : int(verse["end_s"] * sr)]
    before = energy[: int(max(verse["start_s"] - 0.3, 0) * sr)]
    assert inside.mean() > 10 * (before.mean() + 1e-9)  # the singing is placed in the verse
    mix = encode.decode(files["mix.wav"].data)
    plan = json.loads(files["plan.json"].data)
    assert mix.duration_s == pytest.approx(plan["duration_s"], rel=0.01) and plan["duration_s"] > 14
    assert abs(integrated_lufs(mix.audio, sr) + 14) <= 1 and np.max(np.abs(mix.audio)) < 0.9


def test_no_lyrics_no_singer(basic_voicebank: Path) -> None:
    jen1 = Jen1Engine(RenderEngine(), singer=lambda: pytest.fail("the singer must not be asked"))
    res = jen1.run({"instructions": "a folk song with a female voice", "duration_s": 4}, LocalContext())
    assert any("the plan has no lyrics" in d for d in res.output["decisions"])
