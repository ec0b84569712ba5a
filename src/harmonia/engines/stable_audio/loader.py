"""Which checkpoints the Stable Audio engine takes: a diffusers `StableAudioPipeline` folder or a
hub id of one (`stabilityai/stable-audio-open-1.0` is gated: accept its licence on the hub and
give the process an `HF_TOKEN` for the first download)."""

from __future__ import annotations

from harmonia.engines.diffusion import check_pipeline_ref

PIPELINE_CLASS = "StableAudioPipeline"
FAMILY = "Stable Audio"
LICENSE = "Stability AI Community License (Stable Audio Open weights)"


def check_model_ref(ref: str) -> str:
    """'local' or 'hub'; EngineUnavailable (one line naming the path) for anything else."""
    return check_pipeline_ref(ref, PIPELINE_CLASS, FAMILY)
