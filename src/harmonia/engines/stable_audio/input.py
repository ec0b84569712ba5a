"""The `stable-audio` request. The longest clip depends on the checkpoint (47.55 s for Stable Audio
Open 1.0) and is checked by the engine once it is loaded."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from harmonia.engines.diffusion import MAX_PROMPT_CHARS, OutputFormat, Prompt, Seed


class StableAudioInput(BaseModel):
    """A prompt (and what to avoid) to a 44.1 kHz stereo clip."""

    model_config = ConfigDict(extra="forbid")

    prompt: Prompt = Field(description="what the audio should be", examples=["128 BPM tech house drum loop"])
    negative_prompt: str | None = Field(
        None, max_length=MAX_PROMPT_CHARS, description="what it should not be", examples=["low quality"]
    )
    duration_s: float = Field(
        10.0, gt=0.0, le=600.0, description="seconds; at most the checkpoint's limit (47.55 s for Open 1.0)"
    )
    steps: int = Field(100, ge=1, le=1000, description="diffusion steps")
    guidance_scale: float = Field(7.0, ge=0.0, le=20.0, description="classifier-free guidance; <= 1 is off")
    seed: Seed = None
    format: OutputFormat = "wav"
