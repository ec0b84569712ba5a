"""What every model family that loads torch checkpoints shares: whether a hub checkpoint is already
in the local Hugging Face cache (so a job never waits on a download it cannot make), and the choice
of device and dtype (`auto`: CUDA when present, bfloat16/float16 there, float32 on the CPU)."""

from __future__ import annotations

from typing import Any

from harmonia.errors import EngineUnavailable


def in_hub_cache(ref: str, marker: str = "config.json") -> bool:
    """Is hub checkpoint `ref` in the local Hugging Face cache already (its `marker` file: a model's
    `config.json`, a diffusers pipeline's `model_index.json`)?"""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(ref, marker), str)
    except ValueError:  # not a valid repo id
        return False


def resolve_device(device: str) -> Any:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineUnavailable("device 'cuda' was asked for but torch sees no CUDA device")
    return torch.device(device)


def resolve_dtype(dtype: str, device: Any) -> Any:
    """`auto`: bfloat16 on CUDA where supported (else float16), float32 on CPU."""
    import torch

    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
