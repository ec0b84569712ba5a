"""The ACE-Step 1.5 engine: `AceStepPipeline` behind the shared `DiffusionEngine` (batching, per-step
progress and cancel, seeds, WAV/FLAC output).

Requests share a pipeline call when everything the pipeline takes once per call is equal (duration,
steps, guidance, shift, tempo, key, metre); prompts, lyrics, languages and seeds differ per row. A
repaint runs on its own (its clip is the call's source audio). Turbo checkpoints have guidance
distilled into the weights, so a guidance_scale above 1 is refused for them rather than ignored.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from harmonia.engines.acestep.input import AceStepInput
from harmonia.engines.acestep.loader import FAMILY, PIPELINE_CLASS, check_model_ref
from harmonia.engines.diffusion import DiffusionEngine, Request, StepReporter, fit_frames, require_extra
from harmonia.errors import InvalidInput

DEFAULT_STEPS = 8  # the turbo recipe; base/SFT users often ask for 30-60
BASE_GUIDANCE = 7.0  # the pipeline's default for checkpoints that use guidance


class AceStepEngine(DiffusionEngine):
    """Songs with vocals (or instrumentals) from a prompt and lyrics; repaint of a given clip."""

    name: ClassVar[str] = "acestep"
    input_model: ClassVar[type[BaseModel]] = AceStepInput
    pipeline_class: ClassVar[str] = PIPELINE_CLASS
    family: ClassVar[str] = FAMILY

    @property
    def turbo(self) -> bool:
        return bool(self.pipe.is_turbo)

    def describe(self) -> dict[str, Any]:
        return {
            "variant": "turbo" if self.turbo else "base",
            "latents_per_second": float(self.pipe.latents_per_second),
            "guidance": not self.turbo,
            "tasks": ["text2music", "repaint"],
        }

    def duration_is_asked(self, payload: Any) -> bool:
        return payload.audio is None or "duration_s" in payload.model_fields_set

    def steps_of(self, payload: Any) -> int:
        return int(payload.steps or DEFAULT_STEPS)

    def guidance_of(self, payload: AceStepInput) -> float:
        if self.turbo:
            return 1.0
        return float(payload.guidance_scale if payload.guidance_scale is not None else BASE_GUIDANCE)

    def prepare(self, r: Request) -> None:
        p: AceStepInput = r.payload
        if self.turbo and p.guidance_scale is not None and p.guidance_scale > 1.0:
            raise InvalidInput(
                "this checkpoint is guidance-distilled (turbo): leave guidance_scale unset or 1",
                "guidance_scale",
            )
        seconds = float(p.duration_s)
        if p.audio is not None:
            clip = self.decode_audio(p.audio, "audio")
            if "duration_s" not in p.model_fields_set:
                seconds = clip.shape[0] / self.sample_rate
            if seconds > self.settings.max_duration_s:
                raise InvalidInput(
                    f"the clip is {seconds:.1f} s; at most {self.settings.max_duration_s:g} s on this server",
                    "audio",
                )
            if p.repaint_start_s >= seconds:
                raise InvalidInput(
                    f"repaint_start_s must be inside the {seconds:.2f} s of audio", "repaint_start_s"
                )
            r.frames = round(seconds * self.sample_rate)
            # The source is cut, or padded with silence (a repaint over the padding extends the song),
            # to whole latent frames.
            hop = round(self.sample_rate / float(self.pipe.latents_per_second))
            r.data["src"] = fit_frames(clip, -(-r.frames // hop) * hop)
        r.data["seconds"] = seconds
        r.data["output"] = {
            "task": p.task,
            "variant": "turbo" if self.turbo else "base",
            "guidance_scale": self.guidance_of(p),
            "shift": p.shift,
            "instrumental": not p.lyrics.strip(),
        }

    def group_key(self, r: Request) -> Hashable:
        p: AceStepInput = r.payload
        shared = (round(r.data["seconds"], 4), self.steps_of(p), self.guidance_of(p), p.shift, p.bpm, p.key)
        return (*shared, p.time_signature, id(r) if p.audio is not None else None)

    def call(self, requests: Sequence[Request], generators: list[Any], reporter: StepReporter) -> Any:
        import torch

        first: AceStepInput = requests[0].payload
        repaint: dict[str, Any] = {}
        if first.audio is not None:
            src = torch.from_numpy(requests[0].data["src"].T.copy())  # (channels, samples)
            repaint = dict(
                task_type="repaint", src_audio=src,
                repainting_start=first.repaint_start_s, repainting_end=first.repaint_end_s,
            )  # fmt: skip
        return self.pipe(
            prompt=[r.payload.prompt for r in requests],
            lyrics=[r.payload.lyrics for r in requests],
            vocal_language=[r.payload.vocal_language for r in requests],
            audio_duration=requests[0].data["seconds"],
            num_inference_steps=self.steps_of(first),
            guidance_scale=self.guidance_of(first),
            shift=first.shift,
            bpm=first.bpm,
            keyscale=first.key,
            timesignature=first.time_signature,
            generator=generators,
            output_type="pt",
            callback_on_step_end=reporter.on_step_end,
            **repaint,
        ).audios


def build_engine(settings: Any, model: str | None = None) -> AceStepEngine:
    """An ACE-Step engine from the process settings (`settings.acestep`); `model` overrides the
    checkpoint. Raises EngineUnavailable (one line) for a missing extra or a path that is not one."""
    # the path first: a wrong one is told without importing torch
    check_model_ref(model or settings.acestep.model)
    require_extra(FAMILY)
    return AceStepEngine(settings.acestep, model=model)
