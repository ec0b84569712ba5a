"""The MusicGen request (also what `POST /generate` of `harmonia serve musicgen` takes). Imports
without torch, so the gateway validates payloads without the `[musicgen]` extra."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, ConfigDict, Field, field_validator

from harmonia.engines.base import AliasedInput

MAX_TEXT_CHARS = 2000


class MusicgenInput(AliasedInput):
    """A MusicGen request. `duration_s` is capped by `MusicgenSettings.max_duration_s` (checked by
    the engine, which knows the setting). The names audiocraft (`duration`, `cfg_coef`) and hosted
    MusicGen APIs (`prompt`, `duration`, `classifier_free_guidance`, `output_format`) use are
    accepted too."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        ...,
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="what the music should be",
        validation_alias=AliasChoices("text", "prompt"),
    )
    duration_s: float = Field(
        8.0,
        ge=0.5,
        description="seconds of new audio; > window via continuation",
        validation_alias=AliasChoices("duration_s", "duration"),
    )
    guidance_scale: float = Field(
        3.0,
        ge=0.0,
        le=20.0,
        description="classifier-free guidance; <= 1 is off",
        validation_alias=AliasChoices("guidance_scale", "classifier_free_guidance", "cfg_coef"),
    )
    temperature: float = Field(1.0, ge=0.0, le=10.0, description="0 = greedy decoding")
    top_k: int = Field(250, ge=0, le=4096, description="0 = no top-k filter")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling; 1 = off")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="same seed, same audio; unset = random")
    audio_prompt: str | None = Field(
        None, max_length=16_000_000, description="base64 WAV/FLAC to continue (returned audio includes it)"
    )
    format: Literal["wav", "flac"] = Field("wav", validation_alias=AliasChoices("format", "output_format"))
    stream: bool = Field(False, description="publish audio chunks while generating")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()
