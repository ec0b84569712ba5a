"""Benchmark: seconds of audio per wall second of ACE-Step 1.5 and Stable Audio Open, real-size
architectures with random weights, through Harmonia's engines (batcher, one pipeline call per batch,
per-step progress, WAV encoding), on CUDA when torch sees a GPU, else on the CPU.

  python bench/diffusers_models.py                              # both, the defaults below
  python bench/diffusers_models.py --models acestep --seconds 60 --batches 1,4
  python bench/diffusers_models.py --models stable-audio --steps 100

Architectures (random weights: the work per step does not depend on the values):
  acestep       ACE-Step 1.5 turbo ("2B": a 1.58B DiT and its condition encoder):
                AceStepTransformer1DModel and AceStepConditionEncoder at their release sizes
                (hidden 2048, 24 DiT layers, 8 lyric / 4 timbre encoder layers),
                the Qwen3-Embedding-0.6B text encoder (28 layers, hidden 1024), the Oobleck VAE at
                48 kHz with a 1920x hop (25 latents/s, 64 channels, the Stable Audio VAE's widths).
  stable-audio  Stable Audio Open 1.0 (1.06B DiT, 24 layers, 1024-latent window = 47.55 s), T5-base
                text encoder, the 44.1 kHz Oobleck VAE; the pipeline always denoises the whole
                window and cuts the clip out, so a short clip costs as much as a 47 s one.
The tokenizers are the tiny ones (`tiny_tokenizers`): ids fall inside the real vocabularies; the
BPE one splits text into more pieces than Qwen's, so ACE-Step's text encoding is slightly overcounted.

Each row: one batch of `batch` concurrent requests (one pipeline call), `x_realtime` = seconds of
audio made (all rows) per wall second end to end; `step_s` is the median time between two step
reports (one DiT forward, two with guidance), `encode_s` the time to the first report less one step
(text + condition encoding), `decode_s` the time after the last report (VAE decode + WAV). A full
`--steps` run is estimated as encode_s + steps * step_s + decode_s when fewer steps were run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

from harmonia.config import AceStepSettings, StableAudioSettings
from harmonia.engines.diffusion import LoadedPipeline
from harmonia.engines.tiny_tokenizers import qwen_tokenizer, t5_tokenizer

LYRICS = (
    "[verse]\nWalking down the empty street, the city lights are low\nEvery step a heartbeat, every word "
    "I didn't show\n[chorus]\nSing it loud, sing it now, let the night remember\nHold the sound, hold it "
    "close, from July to December\n"
)
DEFAULTS = {  # per model: seconds of audio, steps (the release recipes: ACE-Step turbo 8, SAO 100)
    "acestep": {"seconds": 10.0, "steps": 8, "full_steps": 8, "guidance": None},
    "stable-audio": {"seconds": 10.0, "steps": 4, "full_steps": 100, "guidance": 7.0},
}


class Clock:
    """A RunContext recording when each diffusion step was reported."""

    def __init__(self) -> None:
        self.steps: list[float] = []

    def progress(self, fraction: float, message: str = "") -> None:
        if message.startswith("step"):
            self.steps.append(time.perf_counter())

    def check(self) -> None:
        return None

    def event(self, kind: str, data: dict[str, Any]) -> None:
        return None


def build_acestep(device: Any, dtype: Any) -> Any:
    from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    with torch.device(device):
        text_encoder = Qwen3Model(
            Qwen3Config(
                hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                num_key_value_heads=8, head_dim=128, vocab_size=151669, max_position_embeddings=32768,
                rope_theta=1_000_000.0,
            )
        )  # fmt: skip
        transformer = AceStepTransformer1DModel(is_turbo=True, model_version="turbo")  # release defaults
        condition_encoder = AceStepConditionEncoder()
        vae = AutoencoderOobleck(
            encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 6, 10], channel_multiples=[1, 2, 4, 8, 16],
            decoder_channels=128, decoder_input_channels=64, audio_channels=2, sampling_rate=48000,
        )  # fmt: skip
    pipe = AceStepPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=qwen_tokenizer(), transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
    )  # fmt: skip
    return pipe.to(device=device, dtype=dtype)


def build_stable_audio(device: Any, dtype: Any) -> Any:
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel

    tokenizer = t5_tokenizer()
    tokenizer.model_max_length = 128
    with torch.device(device):
        text_encoder = T5EncoderModel(
            T5Config(
                d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12, vocab_size=32128,
                relative_attention_num_buckets=32, feed_forward_proj="relu",
            )
        )  # fmt: skip
        transformer = StableAudioDiTModel()  # release defaults: Stable Audio Open 1.0
        projection = StableAudioProjectionModel(
            text_encoder_dim=768, conditioning_dim=768, min_value=0, max_value=512
        )
        vae = AutoencoderOobleck()  # release defaults: 44.1 kHz, 2048x hop, 64 latent channels
    pipe = StableAudioPipeline(
        vae=vae, text_encoder=text_encoder, projection_model=projection, tokenizer=tokenizer,
        transformer=transformer,
        scheduler=CosineDPMSolverMultistepScheduler(
            sigma_min=0.3, sigma_max=500, sigma_data=1.0, sigma_schedule="exponential", solver_order=2,
            prediction_type="v_prediction",
        ),
    )  # fmt: skip
    return pipe.to(device=device, dtype=dtype)


def engine_for(name: str, device: Any, dtype: Any, batch: int) -> Any:
    loaded_at = time.perf_counter()
    if name == "acestep":
        from harmonia.engines.acestep.engine import AceStepEngine

        pipe = build_acestep(device, dtype)
        settings: Any = AceStepSettings(model="bench/acestep-2b-turbo", max_batch_size=batch, max_wait_ms=500)
        engine: Any = AceStepEngine(settings, loaded=LoadedPipeline(pipe, device, dtype))
    else:
        from harmonia.engines.stable_audio.engine import StableAudioEngine

        pipe = build_stable_audio(device, dtype)
        settings = StableAudioSettings(
            model="bench/stable-audio-open-1.0", max_batch_size=batch, max_wait_ms=500
        )
        engine = StableAudioEngine(settings, loaded=LoadedPipeline(pipe, device, dtype))
    pipe.set_progress_bar_config(disable=True)
    params = sum(p.numel() for p in pipe.components["transformer"].parameters()) / 1e9
    return engine, params, time.perf_counter() - loaded_at


def run_batch(engine: Any, name: str, batch: int, seconds: float, steps: int, guidance: float | None) -> dict:
    from harmonia.engines.acestep.input import AceStepInput
    from harmonia.engines.stable_audio.input import StableAudioInput

    def payload(i: int) -> Any:
        if name == "acestep":
            return AceStepInput(
                prompt=f"pop song {i}", lyrics=LYRICS, duration_s=seconds, steps=steps, seed=i
            )
        return StableAudioInput(
            prompt=f"drum loop {i}", duration_s=seconds, steps=steps, guidance_scale=guidance, seed=i
        )

    clocks = [Clock() for _ in range(batch)]
    results: list[Any] = [None] * batch
    barrier = threading.Barrier(batch)

    def call(i: int) -> None:
        barrier.wait()
        results[i] = engine.run(payload(i), clocks[i])

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(batch)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ticks = clocks[0].steps
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    step_s = statistics.median(gaps) if gaps else ticks[0] - t0
    call_size = results[0].output["call_size"]
    return {
        "wall_s": round(wall, 3),
        "call_size": call_size,
        "audio_s": round(batch * seconds, 2),
        "x_realtime": round(batch * seconds / wall, 4),
        "encode_s": round(max(ticks[0] - t0 - step_s, 0.0), 3),
        "step_s": round(step_s, 4),
        "decode_s": round(t0 + wall - ticks[-1], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="acestep,stable-audio")
    ap.add_argument("--seconds", type=float, help="audio per request (default: 10 s)")
    ap.add_argument("--steps", type=int, help="diffusion steps (default: acestep 8, stable-audio 4)")
    ap.add_argument("--batches", help="concurrent requests per batch (default: 1,4 on CUDA, 1 on CPU)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in (args.batches or ("1,4" if cuda else "1")).split(",")]
    head = {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({args.threads} threads)",
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "load_avg": os.getloadavg()[0],
        "note": None if cuda else "no GPU in this run: CPU numbers only",
    }
    print(json.dumps(head), flush=True)
    for name in args.models.split(","):
        d = DEFAULTS[name]
        seconds = args.seconds or d["seconds"]
        steps = args.steps or d["steps"]
        engine, params, build_s = engine_for(name, device, dtype, max(batches))
        try:
            if cuda:  # warm-up: kernel selection and the caching allocator (the CPU has neither)
                run_batch(engine, name, 1, min(seconds, 2.0), 1, d["guidance"])
            for batch in batches:
                row = run_batch(engine, name, batch, seconds, steps, d["guidance"])
                row = {"model": name, "dit_params_b": round(params, 2), "batch": batch, "seconds": seconds,
                       "steps": steps, **row, "build_s": round(build_s, 1)}  # fmt: skip
                if steps != d["full_steps"]:
                    full = row["encode_s"] + d["full_steps"] * row["step_s"] + row["decode_s"]
                    row[f"est_wall_s_at_{d['full_steps']}_steps"] = round(full, 1)
                    row[f"est_x_realtime_at_{d['full_steps']}_steps"] = round(batch * seconds / full, 4)
                print(json.dumps(row), flush=True)
        finally:
            engine.close()
            del engine
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
