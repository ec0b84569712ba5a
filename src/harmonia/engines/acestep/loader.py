"""Which checkpoints the ACE-Step engine takes: a diffusers `AceStepPipeline` folder (written by
`save_pretrained`, or converted from the original release with diffusers'
`scripts/convert_ace_step_to_diffusers.py`) or a hub id of one."""

from __future__ import annotations

from harmonia.engines.diffusion import check_pipeline_ref

PIPELINE_CLASS = "AceStepPipeline"
FAMILY = "ACE-Step"
LICENSE = "MIT (ACE-Step 1.5 code and weights)"


def check_model_ref(ref: str) -> str:
    """'local' or 'hub'; EngineUnavailable (one line naming the path) for anything else."""
    return check_pipeline_ref(ref, PIPELINE_CLASS, FAMILY)
