"""A tiny random-weight Stable Audio Open checkpoint with the real architecture, built offline.

Used by the test suite and by `harmonia make-tiny stable-audio DIR`: the real component classes
(`StableAudioDiTModel`, `StableAudioProjectionModel`, a T5 encoder with a tokenizer made on the spot,
the Oobleck VAE at 44.1 kHz with the release's 2048x hop, and its cosine DPM-Solver scheduler),
narrow and shallow, assembled into a `StableAudioPipeline` and written with `save_pretrained`. Its
window is 64 latents (2.97 s) where the release has 1024 (47.55 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harmonia.engines.tiny_tokenizers import t5_tokenizer

LATENT_DIM = 8  # latent channels (64 in the release)
WINDOW_LATENTS = 64


def make_tiny_stable_audio(path: str | Path, *, seed: int = 0) -> Path:
    """Build and save a tiny random `StableAudioPipeline` under `path`; return the path."""
    import torch
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = t5_tokenizer()
    tokenizer.model_max_length = 128  # as the release: prompts are padded to 128 tokens
    text_encoder = T5EncoderModel(
        T5Config(
            d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, vocab_size=len(tokenizer),
            relative_attention_num_buckets=8, feed_forward_proj="relu",
        )
    ).eval()  # fmt: skip
    transformer = StableAudioDiTModel(
        sample_size=WINDOW_LATENTS, in_channels=LATENT_DIM, out_channels=LATENT_DIM, num_layers=2,
        attention_head_dim=8, num_attention_heads=4, num_key_value_attention_heads=2,
        cross_attention_dim=32, cross_attention_input_dim=32, time_proj_dim=16, global_states_input_dim=64,
    )  # fmt: skip
    projection = StableAudioProjectionModel(
        text_encoder_dim=32, conditioning_dim=32, min_value=0, max_value=512
    )
    vae: Any = AutoencoderOobleck(
        encoder_hidden_size=2 * LATENT_DIM,  # mean and scale of each latent channel
        downsampling_ratios=[2, 4, 4, 8, 8], channel_multiples=[1, 2, 2, 2, 2], decoder_channels=4,
        decoder_input_channels=LATENT_DIM, audio_channels=2, sampling_rate=44100,
    )  # fmt: skip
    scheduler = CosineDPMSolverMultistepScheduler(
        sigma_min=0.3, sigma_max=500, sigma_data=1.0, sigma_schedule="exponential", solver_order=2,
        prediction_type="v_prediction",
    )  # fmt: skip
    pipe: Any = StableAudioPipeline(
        vae=vae, text_encoder=text_encoder, projection_model=projection, tokenizer=tokenizer,
        transformer=transformer, scheduler=scheduler,
    )  # fmt: skip
    pipe.save_pretrained(out)
    return out
