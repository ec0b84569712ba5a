"""A tiny random-weight ACE-Step 1.5 checkpoint with the real architecture, built offline.

Used by the test suite and by `harmonia make-tiny acestep DIR`: the real component classes
(`AceStepTransformer1DModel` DiT, `AceStepConditionEncoder`, a Qwen3 text encoder with a byte-level
BPE tokenizer made on the spot, the Oobleck VAE at 48 kHz with ACE-Step's 1920x hop, so 25 latent
frames a second, and the flow-matching scheduler), narrow and shallow, assembled into an
`AceStepPipeline` and written with `save_pretrained`; loading it takes the same path as a released
checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harmonia.engines.tiny_tokenizers import qwen_tokenizer

ACOUSTIC_DIM = 8  # latent channels (64 in the release)


def make_tiny_acestep(path: str | Path, *, turbo: bool = True, seed: int = 0) -> Path:
    """Build and save a tiny random `AceStepPipeline` under `path`; `turbo=False` makes a base
    (guidance) variant. Returns the path."""
    import torch
    from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = qwen_tokenizer()
    heads: dict[str, Any] = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=16)
    text_encoder = Qwen3Model(
        Qwen3Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, vocab_size=len(tokenizer),
            max_position_embeddings=4096, **heads,
        )
    ).eval()  # fmt: skip
    transformer = AceStepTransformer1DModel(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, patch_size=2,
        in_channels=3 * ACOUSTIC_DIM,  # noisy latents + source latents + chunk mask
        audio_acoustic_hidden_dim=ACOUSTIC_DIM, is_turbo=turbo, model_version="turbo" if turbo else "base",
        **heads,
    )  # fmt: skip
    condition_encoder: Any = AceStepConditionEncoder(
        hidden_size=32, intermediate_size=64, text_hidden_dim=32, timbre_hidden_dim=ACOUSTIC_DIM,
        num_lyric_encoder_hidden_layers=1, num_timbre_encoder_hidden_layers=1, **heads,
    )  # fmt: skip
    vae: Any = AutoencoderOobleck(
        encoder_hidden_size=2 * ACOUSTIC_DIM,  # mean and scale of each latent channel
        downsampling_ratios=[2, 4, 4, 6, 10], channel_multiples=[1, 2, 2, 2, 2], decoder_channels=4,
        decoder_input_channels=ACOUSTIC_DIM, audio_channels=2, sampling_rate=48000,
    )  # fmt: skip
    with torch.no_grad():
        # As the release's converter does: the timbre encoder's "no reference" input is the VAE's
        # encoding of silence (zeros would be out of distribution), here tiled from two seconds.
        silence = vae.encode(torch.zeros(1, 2, 2 * 48000)).latent_dist.mean.transpose(1, 2)
        frames = condition_encoder.silence_latent.shape[1]
        condition_encoder.silence_latent.copy_(
            silence.repeat(1, -(-frames // silence.shape[1]), 1)[:, :frames]
        )
    pipe: Any = AceStepPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
    )  # fmt: skip
    pipe.save_pretrained(out)
    return out
