"""The `acestep` request: a style prompt and a lyric sheet (or none, for an instrumental), and
optionally a clip to repaint. Limits that depend on the loaded checkpoint or the server's settings
(duration, steps, guidance on a turbo checkpoint) are checked by the engine."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harmonia.engines.diffusion import OutputFormat, Prompt, Seed
from harmonia.errors import InvalidInput

MAX_LYRICS_CHARS = 8000


class AceStepInput(BaseModel):
    """Text (and lyrics) to a song; with `audio`, a repaint of that clip between two times."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt = Field(
        description="style, genre, instruments, mood", examples=["upbeat synth-pop, female vocals, 120 bpm"]
    )
    lyrics: str = Field(
        "", max_length=MAX_LYRICS_CHARS,
        description="the lyric sheet, sections tagged [verse], [chorus], [bridge]...; empty: instrumental",
    )  # fmt: skip
    duration_s: float = Field(
        30.0, ge=1.0, le=600.0,
        description="seconds of audio (ACE-Step makes 10 s to 10 min); with `audio`: default the clip's",
    )  # fmt: skip
    steps: int | None = Field(None, ge=1, le=1000, description="diffusion steps; unset: 8 (the turbo recipe)")
    guidance_scale: float | None = Field(
        None, ge=1.0, le=20.0,
        description="guidance (APG) of base/SFT checkpoints, unset: 7; turbo checkpoints are distilled: none",
    )  # fmt: skip
    shift: float = Field(3.0, ge=1.0, le=5.0, description="timestep shift of the flow-matching schedule")
    bpm: int | None = Field(None, ge=30, le=300, description="tempo; unset: the model chooses")
    key: str | None = Field(None, max_length=32, examples=["C major", "F# minor"])
    time_signature: Literal["2", "3", "4", "6"] | None = Field(None, description="beats per bar")
    vocal_language: str = Field("en", pattern=r"^([a-z]{2,3}|unknown)$", description="language of the lyrics")
    seed: Seed = None
    audio: str | None = Field(
        None, max_length=64_000_000,
        description="base64 WAV/FLAC to repaint: the span [repaint_start_s, repaint_end_s) is generated "
        "anew, the rest kept; a duration_s past the clip's end extends it",
    )  # fmt: skip
    repaint_start_s: float = Field(0.0, ge=0.0, description="with `audio`: where the repainted span starts")
    repaint_end_s: float | None = Field(
        None, gt=0.0, description="with `audio`: where it ends; unset: the end"
    )
    format: OutputFormat = "wav"

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            from harmonia.music.theory import parse_key

            parse_key(value)
        return value

    @model_validator(mode="after")
    def _repaint(self) -> AceStepInput:
        if self.audio is None:
            for name in ("repaint_start_s", "repaint_end_s"):
                if name in self.model_fields_set:
                    raise InvalidInput(f"{name} needs `audio`, the clip to repaint", name)
        elif self.repaint_end_s is not None and self.repaint_end_s <= self.repaint_start_s:
            raise InvalidInput("repaint_end_s must be after repaint_start_s", "repaint_end_s")
        return self

    @property
    def task(self) -> Literal["text2music", "repaint"]:
        return "text2music" if self.audio is None else "repaint"
