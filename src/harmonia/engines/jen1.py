"""The `jen1` engine: instructions in plain words -> a composed, rendered piece of music.

Pipeline (each stage its own module, so each can grow or be swapped on its own):
  interpret (`interpret.py`, rule-based; an LLM planner can replace it later)
  -> compose (`composer.py` + `accompaniment.py`: form, harmony, melody, supporting parts)
  -> render (`render.py`: the SoundFont renderer, shared with the `render` engine)
  -> fit to the requested duration, normalise the peak, encode.
Artifacts: `audio.wav` (or `audio.flac`), `score.json` (what was played and why), `arrangement.mid`.
"""

from __future__ import annotations

import io
import json
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harmonia.audio import analysis, encode
from harmonia.engines.base import ArtifactData, EngineResult, RunContext
from harmonia.engines.composer import compose
from harmonia.engines.instruments import find_instrument, known_names
from harmonia.engines.interpret import (
    MAX_DURATION_S,
    MAX_TEMPO,
    MIN_DURATION_S,
    MIN_TEMPO,
    InterpretError,
    interpret,
)
from harmonia.engines.render import RenderEngine, validate_input
from harmonia.engines.theory import parse_key
from harmonia.errors import InvalidInput

_END_FADE_S = 0.3


class Jen1Input(BaseModel):
    """`instructions` says what to make; the optional fields override what the text implies."""

    model_config = ConfigDict(extra="forbid")

    instructions: str = Field(min_length=1, max_length=2000, examples=["render violin"])
    duration_s: float | None = Field(None, ge=MIN_DURATION_S, le=MAX_DURATION_S)
    tempo_bpm: float | None = Field(None, ge=MIN_TEMPO, le=MAX_TEMPO)
    key: str | None = Field(None, max_length=32, examples=["D minor", "F# major"])
    instruments: list[str] | None = Field(None, min_length=1, max_length=8)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    output: Literal["wav", "flac"] = "wav"

    @field_validator("instructions")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("instructions must not be blank")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            parse_key(value)
        return value

    @field_validator("instruments")
    @classmethod
    def _instruments(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if find_instrument(name) is None:
                raise ValueError(f"unknown instrument {name!r}; known: {', '.join(known_names())}")
        return value

    @model_validator(mode="after")
    def _interpretable(self) -> Jen1Input:
        """Read the text now, so "render violin for 2 hours" is refused at submission (422), not
        after queueing. InvalidInput (not a ValueError) keeps the field the interpreter blames."""
        try:
            interpret(
                self.instructions,
                duration_s=self.duration_s,
                tempo_bpm=self.tempo_bpm,
                key=self.key,
                instruments=self.instruments,
                seed=self.seed,
            )
        except InterpretError as exc:
            raise InvalidInput(str(exc), exc.field) from exc
        return self


class Jen1Engine:
    """Instruction-driven composition rendered with the `render` engine's SoundFont synth."""

    name: ClassVar[str] = "jen1"
    input_model: ClassVar[type[BaseModel]] = Jen1Input

    def __init__(self, render: RenderEngine) -> None:
        self._render = render

    def info(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "planner": "rules",
            "composer": "rules",
            "renderer": self._render.info(),
            "instruments": known_names(),
            "duration_s": [MIN_DURATION_S, MAX_DURATION_S],
            "tempo_bpm": [MIN_TEMPO, MAX_TEMPO],
            "outputs": ["wav", "flac"],
        }

    def run(self, payload: BaseModel | dict[str, Any], ctx: RunContext) -> EngineResult:
        req: Jen1Input = validate_input(Jen1Input, payload)
        try:
            interp = interpret(
                req.instructions,
                duration_s=req.duration_s,
                tempo_bpm=req.tempo_bpm,
                key=req.key,
                instruments=req.instruments,
                seed=req.seed,
            )
        except InterpretError as exc:
            raise InvalidInput(str(exc), field=exc.field) from exc
        ctx.progress(0.05, "interpret")

        score = compose(interp)
        midi = score.to_midi()
        ctx.progress(0.15, "compose")

        sample_rate = self._render.sample_rate
        rendered = self._render.render_midi(
            midi, ctx, sample_rate=sample_rate, tail_s=2.0, progress_range=(0.15, 0.95), trim=False
        )
        audio = encode.normalize_peak(fit_duration(rendered.audio, sample_rate, score.duration_s), -1.0)
        data = encode.encode(audio, sample_rate, req.output)

        midi_buf = io.BytesIO()
        midi.write(midi_buf)
        score_doc = score.as_json()
        score_doc["interpretation"] = interp.as_dict()
        score_doc["sample_rate"] = sample_rate
        artifacts = [
            ArtifactData(f"audio.{req.output}", data, encode.CONTENT_TYPES[req.output]),
            ArtifactData("score.json", json.dumps(score_doc, indent=1).encode(), "application/json"),
            ArtifactData("arrangement.mid", midi_buf.getvalue(), "audio/midi"),
        ]
        ctx.progress(1.0, "encode")
        output = {
            "engine": self.name,
            "planner": "rules",
            "interpretation": interp.as_dict(),
            "seed": interp.seed,
            "duration_s": round(audio.shape[0] / sample_rate, 4),
            "sample_rate": sample_rate,
            "format": req.output,
            "bars": len(score.bars),
            "chords": [bar.chord.roman for bar in score.bars],
            "notes": sum(len(p.notes) for p in score.parts),
            "parts": [
                {"instrument": p.instrument.name, "role": p.role, "notes": len(p.notes)} for p in score.parts
            ],
            "peak_dbfs": round(analysis.peak_dbfs(audio), 2),
            "rms_dbfs": round(analysis.rms_dbfs(audio), 2),
            "artifacts": [a.name for a in artifacts],
        }
        return EngineResult(artifacts=artifacts, output=output)


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
