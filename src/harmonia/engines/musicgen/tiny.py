"""A tiny random-weight MusicGen checkpoint with the real architecture, built offline.

Used by the test suite and by `harmonia models make-tiny musicgen DIR`: a T5 text encoder with a
tokenizer made on the spot (`tiny_tokenizers`, no download), an EnCodec 32 kHz codec with narrow layers
and a two-layer MusicGen decoder, all built from the real transformers config classes and written
with `save_pretrained`, so loading it exercises the same code path as `facebook/musicgen-small`.
"""

from __future__ import annotations

from pathlib import Path

from harmonia.engines.tiny_tokenizers import t5_tokenizer


def make_tiny_musicgen(path: str | Path, *, stereo: bool = False, seed: int = 0) -> Path:
    """Build and save a tiny random MusicGen (model + processor) under `path`; return the path."""
    import torch
    from transformers import (
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
    )

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = t5_tokenizer()
    text = dict(
        model_type="t5", d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        vocab_size=len(tokenizer), relative_attention_num_buckets=8, feed_forward_proj="relu",
        is_encoder_decoder=True,
    )  # fmt: skip
    # EnCodec 32 kHz geometry (hop 640 -> 50 frames/s, 4 codebooks of 2048 at 2.2 kbps), narrow layers.
    codec = dict(
        model_type="encodec", sampling_rate=32000, audio_channels=1, codebook_size=2048,
        num_filters=4, upsampling_ratios=[8, 5, 4, 4], hidden_size=16, num_residual_layers=1,
        num_lstm_layers=1, target_bandwidths=[2.2], normalize=False, use_causal_conv=False,
        codebook_dim=16, compress=2, norm_type="weight_norm", pad_mode="reflect",
        trim_right_ratio=1.0, use_conv_shortcut=False,
    )  # fmt: skip
    decoder = dict(
        model_type="musicgen_decoder", vocab_size=2048, num_codebooks=8 if stereo else 4,
        max_position_embeddings=2048, audio_channels=2 if stereo else 1, hidden_size=64,
        num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
    )  # fmt: skip
    config = MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=decoder)
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(config).eval()
    # EnCodec codebooks start at zero (real ones come from k-means): give them random vectors so
    # that different codes decode to different audio and encoding audio gives varied codes.
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            book = layer.codebook
            book.embed.normal_(0.0, 1.0)
            book.embed_avg.copy_(book.embed)
            book.cluster_size.fill_(1.0)
    gen = model.generation_config
    gen.decoder_start_token_id = 2048
    gen.pad_token_id = 2048
    gen.do_sample = True
    gen.guidance_scale = 3.0
    gen.max_length = 1500
    model.save_pretrained(out)
    features = EncodecFeatureExtractor(feature_size=1, sampling_rate=32000, padding_value=0.0)
    MusicgenProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)
    return out
