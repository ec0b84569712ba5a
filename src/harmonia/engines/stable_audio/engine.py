"""The Stable Audio Open engine: `StableAudioPipeline` behind the shared `DiffusionEngine`.

The pipeline always denoises the checkpoint's full window (`sample_size` latents, 47.55 s for
Open 1.0) and cuts the asked-for seconds out of it, so a short clip costs as much as a long one.
Requests share a call when their duration, steps, guidance and use of a negative prompt match.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from harmonia.engines.diffusion import DiffusionEngine, Request, StepReporter, require_extra
from harmonia.engines.stable_audio.input import StableAudioInput
from harmonia.engines.stable_audio.loader import FAMILY, PIPELINE_CLASS, check_model_ref
from harmonia.errors import InvalidInput


class StableAudioEngine(DiffusionEngine):
    """Text to 44.1 kHz stereo audio up to the checkpoint's window."""

    name: ClassVar[str] = "stable-audio"
    input_model: ClassVar[type[BaseModel]] = StableAudioInput
    pipeline_class: ClassVar[str] = PIPELINE_CLASS
    family: ClassVar[str] = FAMILY

    @property
    def max_seconds(self) -> float:
        """The checkpoint's window: latents of the DiT times the VAE's hop, in seconds."""
        pipe = self.pipe
        return int(pipe.transformer.config.sample_size) * int(pipe.vae.hop_length) / self.sample_rate

    def describe(self) -> dict[str, Any]:
        return {"max_clip_s": round(self.max_seconds, 3), "guidance": True}

    def steps_of(self, payload: Any) -> int:
        return int(payload.steps)

    def prepare(self, r: Request) -> None:
        p: StableAudioInput = r.payload
        if p.duration_s > self.max_seconds:
            raise InvalidInput(
                f"duration_s must be at most {self.max_seconds:.2f} s for this checkpoint", "duration_s"
            )
        r.data["output"] = {
            "guidance_scale": p.guidance_scale,
            "negative_prompt": p.negative_prompt is not None,
        }

    def group_key(self, r: Request) -> Hashable:
        p: StableAudioInput = r.payload
        return (round(p.duration_s, 4), p.steps, p.guidance_scale, p.negative_prompt is not None)

    def call(self, requests: Sequence[Request], generators: list[Any], reporter: StepReporter) -> Any:
        first: StableAudioInput = requests[0].payload
        negative = None
        if first.negative_prompt is not None:
            negative = [r.payload.negative_prompt for r in requests]
        return self.pipe(
            prompt=[r.payload.prompt for r in requests],
            negative_prompt=negative,
            audio_end_in_s=first.duration_s,
            num_inference_steps=first.steps,
            guidance_scale=first.guidance_scale,
            generator=generators,
            output_type="pt",
            callback=reporter,
            callback_steps=1,
        ).audios


def build_engine(settings: Any, model: str | None = None) -> StableAudioEngine:
    """A Stable Audio engine from the process settings (`settings.stable_audio`); `model` overrides
    the checkpoint. Raises EngineUnavailable (one line) for a missing extra or a wrong path."""
    # the path first: a wrong one is told without importing torch
    check_model_ref(model or settings.stable_audio.model)
    require_extra(FAMILY)
    return StableAudioEngine(settings.stable_audio, model=model)
