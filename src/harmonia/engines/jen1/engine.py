"""The `jen1` engine: instructions in plain words -> a planned, arranged, rendered and mastered piece.

Stages (each its own module, each reported as progress and a `stage` event, each a cancel point):
  plan      (`plan_llm.py`: the LLM helper with a schema-constrained answer when one is configured
             and reachable, else `plan.py`, the rule-based planner) -> a `SongPlan`, stored as `plan.json`
  arrange   (`arrange.py` + `composer.py` + `accompaniment.py`: chords, melody, bass, drums)
  parts     (`jen1_parts.py`: SoundFont per part; a MusicGen / Stable Audio / ACE-Step backing, or
             ACE-Step's whole song, and DiffSinger vocals when present)
  mix       (`audio/mix.py`: balance, pan, sum, limiter, loudness to the target, no clipping)
Artifacts: `mix.wav`/`.flac` (and `audio.*`, the same master under the name the render-instructions
API has always used), `plan.json`, `score.json`, `arrangement.mid`, and `stem-*.wav` when asked.
"""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from harmonia.audio import analysis, encode
from harmonia.audio.mix import mix
from harmonia.engines.base import ArtifactData, EngineResult, RunContext
from harmonia.engines.jen1.arrange import arrange
from harmonia.engines.jen1.input import Jen1Input, SectionIn
from harmonia.engines.jen1.interpret import (
    MAX_DURATION_S,
    MAX_TEMPO,
    MIN_DURATION_S,
    MIN_TEMPO,
    InterpretError,
)
from harmonia.engines.jen1.llm_planner import plan_with_llm
from harmonia.engines.jen1.parts import EngineProvider, PartRenderer
from harmonia.engines.jen1.planner import PlannedSong, plan_with_rules
from harmonia.engines.render.engine import RenderEngine, validate_input
from harmonia.errors import DependencyDown, HarmoniaError, InvalidInput, JobStopped, RetryableError
from harmonia.music.instruments import known_names

__all__ = ["Jen1Engine", "Jen1Input", "SectionIn", "fit_duration"]

_END_FADE_S = 0.3
_LLM_RECHECK_S = 60.0  # how long an unreachable LLM is not asked again


class Jen1Engine:
    """Instruction-driven composition. Only `render` is required; the others are optional
    providers (called when a job needs them) and any of them failing is a stated fallback."""

    name: ClassVar[str] = "jen1"
    input_model: ClassVar[type[BaseModel]] = Jen1Input

    def __init__(
        self,
        render: RenderEngine,
        *,
        musicgen: EngineProvider | None = None,
        singer: EngineProvider | None = None,
        stable_audio: EngineProvider | None = None,
        acestep: EngineProvider | None = None,
        llm: Any = None,  # an LLMClient; None plans with rules only
        llm_budget_s: float | None = None,  # the LLM's time to plan; None: the helper's default
    ) -> None:
        self._render = render
        self._parts = PartRenderer(
            render, musicgen=musicgen, singer=singer, stable_audio=stable_audio, acestep=acestep
        )
        self._llm = llm
        self._llm_budget_s = llm_budget_s
        self._llm_down_until = 0.0
        self._llm_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "planner": "llm" if self._llm is not None else "rules",
            "llm": getattr(self._llm, "model", None),
            "composer": "rules",
            "musicgen": self._parts.musicgen is not None,
            "generators": [name for name, provider in self._parts.generators.items() if provider is not None],
            "singer": self._parts.singer is not None,
            "renderer": self._render.info(),
            "instruments": known_names(),
            "duration_s": [MIN_DURATION_S, MAX_DURATION_S],
            "tempo_bpm": [MIN_TEMPO, MAX_TEMPO],
            "outputs": ["wav", "flac"],
        }

    def run(self, payload: BaseModel | dict[str, Any], ctx: RunContext) -> EngineResult:
        req: Jen1Input = validate_input(Jen1Input, payload)
        # --- plan
        ctx.event("stage", {"stage": "plan"})
        song = self.plan(req)
        ctx.progress(0.05, "plan")
        # --- arrange
        ctx.event("stage", {"stage": "arrange"})
        arrangement = arrange(song)
        score = arrangement.score
        midi = score.to_midi()
        ctx.progress(0.1, "arrange")
        # --- parts
        rendered = self._parts.run(arrangement, song, req.engine, ctx, (0.1, 0.85))
        notes = [*song.notes, *arrangement.notes, *rendered.notes]
        # --- mix and master
        ctx.event("stage", {"stage": "mix"})
        ctx.progress(0.88, "mix")
        sr = self._render.sample_rate
        frames = round(score.duration_s * sr)
        fade = min(_END_FADE_S, 0.1 * score.duration_s)
        master = mix(rendered.stems, sr, frames, target_lufs=req.loudness_lufs, fade_out_s=fade)
        ctx.check()
        ctx.progress(0.95, "encode")
        data = encode.encode(master.audio, sr, req.output)
        content_type = encode.CONTENT_TYPES[req.output]

        midi_buf = io.BytesIO()
        midi.write(midi_buf)
        plan_doc = song.as_json()
        plan_doc["notes"] = notes
        score_doc = score.as_json()
        score_doc["sections"] = [
            {"name": s.name, "bars": s.bars, "start_s": round(s.start_s, 4), "end_s": round(s.end_s, 4)}
            for s in arrangement.sections
        ]
        score_doc["sample_rate"] = sr
        artifacts = [
            ArtifactData(f"mix.{req.output}", data, content_type),
            ArtifactData(f"audio.{req.output}", data, content_type),
            ArtifactData("plan.json", json.dumps(plan_doc, indent=1).encode(), "application/json"),
            ArtifactData("score.json", json.dumps(score_doc, indent=1).encode(), "application/json"),
            ArtifactData("arrangement.mid", midi_buf.getvalue(), "audio/midi"),
        ]
        if req.stems:
            for name, audio in master.stems.items():
                stem = encode.encode(audio, sr, req.output)
                artifacts.append(ArtifactData(f"stem-{name}.{req.output}", stem, content_type))
        ctx.progress(1.0, "done")
        output = {
            "engine": self.name,
            "planner": song.planner,
            "seed": song.seed,
            "title": song.plan.title,
            "genre": song.plan.genre,
            "mood": song.plan.mood,
            "tempo_bpm": score.tempo_bpm,
            "key": score.key.name,
            "time_signature": song.plan.time_signature,
            "duration_s": round(master.audio.shape[0] / sr, 4),
            "sample_rate": sr,
            "format": req.output,
            "bars": score.bar_count,
            "sections": [{"name": s.name, "bars": s.bars} for s in arrangement.sections],
            "chords": [bar.chord.roman for bar in score.bars],
            "notes": sum(len(p.notes) for p in score.parts),
            "parts": rendered.parts,
            "loudness_lufs": round(master.loudness_lufs, 2),
            "target_lufs": req.loudness_lufs,
            "peak_dbfs": round(master.peak_dbfs, 2),
            "limiter_reduction_db": round(master.gain_reduction_db, 2),
            "rms_dbfs": round(analysis.rms_dbfs(master.audio), 2),
            "stem_gains_db": master.stem_gains_db,
            "interpretation": {  # the shape jen1 has reported since the render-instructions API
                "instruments": list(dict.fromkeys(spec.name for spec, _ in song.band)),
                "tempo_bpm": score.tempo_bpm,
                "key": score.key.name,
                "mood": song.mood,
                "time_signature": song.plan.time_signature,
                "duration_s": score.duration_s,
                "seed": song.seed,
                "sources": song.sources,
            },
            "sources": song.sources,
            "decisions": notes,
            "artifacts": [a.name for a in artifacts],
        }
        return EngineResult(artifacts=artifacts, output=output)

    # --- planning ------------------------------------------------------------------------------------

    def plan(self, req: Jen1Input) -> PlannedSong:
        """The rules plan, or the LLM's when an LLM is configured and answers; an LLM that is down or
        answers nonsense leaves the rules plan in charge, with the reason in its notes."""
        try:
            rules = plan_with_rules(req)
        except InterpretError as exc:
            raise InvalidInput(str(exc), exc.field) from exc
        reason = self._llm_unusable()
        if reason is not None:
            if self._llm is not None:
                rules.notes.append(f"LLM planner skipped ({reason}); planned with rules")
            return rules
        try:
            return plan_with_llm(self._llm, req, rules, budget_s=self._llm_budget_s)
        except JobStopped:
            raise
        except (HarmoniaError, ValueError) as exc:  # InvalidAnswer, DependencyDown, PlanError, ...
            if isinstance(exc, DependencyDown | RetryableError):
                with self._llm_lock:
                    self._llm_down_until = time.monotonic() + _LLM_RECHECK_S
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            rules.notes.append(f"LLM plan rejected ({first}); planned with rules")
            return rules

    def _llm_unusable(self) -> str | None:
        if self._llm is None:
            return "no LLM configured"
        with self._llm_lock:
            if time.monotonic() < self._llm_down_until:
                return "the LLM was unreachable moments ago"
        try:
            self._llm.check_ready()
        except HarmoniaError as exc:
            with self._llm_lock:
                self._llm_down_until = time.monotonic() + _LLM_RECHECK_S
            return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None


def fit_duration(audio: np.ndarray, sample_rate: int, duration_s: float) -> np.ndarray:
    """Cut or pad to exactly `duration_s`, fading the last moments so a ringing release ends cleanly."""
    frames = round(duration_s * sample_rate)
    out = np.zeros((frames, audio.shape[1]), dtype=np.float32)
    n = min(frames, audio.shape[0])
    out[:n] = audio[:n]
    fade = min(frames, int(min(_END_FADE_S, 0.1 * duration_s) * sample_rate))
    if fade > 0:
        out[frames - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    return out
