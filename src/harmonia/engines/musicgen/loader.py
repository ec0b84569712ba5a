"""Checkpoint I/O for MusicGen: resolve the model reference, device and dtype, load, optionally quantize.

All file and hub access of the MusicGen engine is here; the engine itself only sees a loaded model.
A reference is a local directory (written by `save_pretrained`) or a hub id such as
`facebook/musicgen-small` (downloaded and cached by transformers where there is internet).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmonia.engines.checkpoints import resolve_device, resolve_dtype
from harmonia.errors import EngineUnavailable

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SUPPORTED_TYPES = ("musicgen",)


def check_model_ref(ref: str) -> str:
    """Cheap check before anything loads: 'local' for a MusicGen directory, 'hub' for a hub id.

    Raises EngineUnavailable with one clear line for a missing path or a directory that is not a
    MusicGen checkpoint.
    """
    path = Path(ref).expanduser()
    if path.exists():
        cfg = path / "config.json"
        if not path.is_dir() or not cfg.is_file():
            raise EngineUnavailable(f"model path {ref} is not a MusicGen checkpoint (no config.json)")
        try:
            model_type = json.loads(cfg.read_text()).get("model_type")
        except (OSError, ValueError) as exc:
            raise EngineUnavailable(f"model path {ref}: unreadable config.json ({exc})") from exc
        if model_type not in SUPPORTED_TYPES:
            raise EngineUnavailable(f"model path {ref} is a {model_type!r} checkpoint, not MusicGen")
        return "local"
    if _HUB_ID.match(ref) and not ref.startswith((".", "/", "~")):
        return "hub"
    raise EngineUnavailable(f"model path {ref} does not exist")


@dataclass
class Loaded:
    model: Any  # MusicgenForConditionalGeneration
    processor: Any  # MusicgenProcessor
    device: Any
    dtype: Any
    quantize: str = "none"  # resolved: "none" or "int8" (applied by FastDecoder to its fused products)


def resolve_quantize(quantize: str, device: Any) -> str:
    """`auto`: int8 on CPU (several times faster decode, tokens differ from float), none elsewhere."""
    if quantize not in ("auto", "none", "int8"):
        raise EngineUnavailable(f"unknown quantize mode {quantize!r}; expected 'auto', 'none' or 'int8'")
    if quantize == "auto":
        return "int8" if device.type == "cpu" else "none"
    if quantize == "int8" and device.type != "cpu":
        raise EngineUnavailable("quantize='int8' is a CPU option; use bfloat16/float16 on CUDA")
    return quantize


def load_musicgen(ref: str, *, device: str = "auto", dtype: str = "auto", quantize: str = "none") -> Loaded:
    """Load model and processor. Only the decoder runs in the reduced dtype: the T5 encoder and
    EnCodec are small and stay float32 (T5 overflows in float16; the codec's LSTM and convolutions
    lose audible quality in bfloat16).

    `quantize` is only resolved and checked here (`auto` -> int8 on CPU, none on CUDA); the
    engine's FastDecoder applies it to its fused products (see `musicgen_packed`). int8 is several
    times faster than float32 on CPU, but the tokens are no longer those of the float model.
    """
    import torch

    check_model_ref(ref)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    quant = resolve_quantize(quantize, dev)
    try:
        from transformers import AutoProcessor, MusicgenForConditionalGeneration
    except ImportError as exc:  # the [musicgen] extra is not installed
        raise EngineUnavailable(
            f"MusicGen needs transformers and torch (install harmonia[musicgen]): {exc}"
        ) from exc
    try:
        model = MusicgenForConditionalGeneration.from_pretrained(ref, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(ref)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineUnavailable(f"cannot load MusicGen from {ref}: {first}") from exc
    model.eval()
    model.to(dev)
    if dt != torch.float32:
        model.decoder.to(dt)
    log.info("loaded MusicGen %s on %s (%s, quantize=%s)", ref, dev, dt, quant)
    return Loaded(model=model, processor=processor, device=dev, dtype=dt, quantize=quant)
