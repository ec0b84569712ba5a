"""Benchmark: Harmonia's MusicGen decode loop against transformers `generate()`, same run, same model.

Prints decode steps/s and realtime factor (seconds of audio per wall second, all rows together) for
`generate()` and for the engine's path (text encoder + FastDecoder + EnCodec decode), with the
ratio, at each batch size. Same model object, device, dtype, guidance (3.0), top-k (250) and length.

  python bench/musicgen.py                          # tiny random checkpoint (built on the fly)
  python bench/musicgen.py --size small --seconds 2 # musicgen-small architecture, random weights
  python bench/musicgen.py --model facebook/musicgen-small --batches 1,8,32
  python bench/musicgen.py --size small --int8      # adds the CPU int8 column (not exact)

Random weights are fine for speed: the work per step does not depend on the values.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from harmonia.engines.musicgen_decode import Conditioning, FastDecoder, RowSpec

T5_BASE = dict(
    model_type="t5", d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12, vocab_size=32128,
    relative_attention_num_buckets=32, feed_forward_proj="relu", is_encoder_decoder=True,
)  # fmt: skip
ENCODEC_32K = dict(
    model_type="encodec", sampling_rate=32000, audio_channels=1, codebook_size=2048, num_filters=64,
    upsampling_ratios=[8, 5, 4, 4], hidden_size=128, num_residual_layers=1, num_lstm_layers=2,
    target_bandwidths=[2.2], normalize=False, use_causal_conv=False, codebook_dim=128, compress=2,
    norm_type="weight_norm", pad_mode="reflect", trim_right_ratio=1.0, use_conv_shortcut=False,
)  # fmt: skip
DECODERS = {
    "small": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096),
    "medium": dict(hidden_size=1536, num_hidden_layers=48, num_attention_heads=24, ffn_dim=6144),
    "large": dict(hidden_size=2048, num_hidden_layers=48, num_attention_heads=32, ffn_dim=8192),
}


def build_random(size: str, device: torch.device):
    from transformers import MusicgenConfig, MusicgenForConditionalGeneration

    dec = dict(
        model_type="musicgen_decoder", vocab_size=2048, num_codebooks=4, max_position_embeddings=2048,
        audio_channels=1, **DECODERS[size],
    )  # fmt: skip
    cfg = MusicgenConfig(text_encoder=dict(T5_BASE), audio_encoder=dict(ENCODEC_32K), decoder=dec)
    with torch.device(device):
        return MusicgenForConditionalGeneration(cfg)


def load(args, device: torch.device):
    from transformers import MusicgenForConditionalGeneration

    if args.size:
        return build_random(args.size, device), f"random {args.size}"
    ref = args.model
    if ref is None:
        from harmonia.engines.musicgen_tiny import make_tiny_musicgen

        ref = str(make_tiny_musicgen(Path(tempfile.mkdtemp()) / "tiny"))
    return MusicgenForConditionalGeneration.from_pretrained(ref).to(device), ref


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_hf(model, ids, mask, n_new: int, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, guidance_scale=3.0, top_k=250,
            max_new_tokens=n_new,
        )  # fmt: skip
    sync(device)
    return time.perf_counter() - t0


def run_fast(model, fd: FastDecoder, ids, mask, frames: int, device, dtype) -> float:
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        h = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        if getattr(model, "enc_to_dec_proj", None) is not None:
            h = model.enc_to_dec_proj(h)
        h = (h * mask[..., None]).to(dtype)
        rows = [
            RowSpec(new_frames=frames, guidance_scale=3.0, top_k=250, seed=i) for i in range(ids.shape[0])
        ]
        codes = fd.decode(Conditioning(h, mask), rows)
        model.audio_encoder.decode(torch.stack(codes).to(device)[None], [None] * len(codes))
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="local dir or hub id; default: a tiny random checkpoint")
    ap.add_argument("--size", choices=sorted(DECODERS), help="real architecture with random weights")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--int8", action="store_true", help="also time the CPU int8 decoder (fast path only)")
    ap.add_argument("--no-cuda-graphs", action="store_true")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, name = load(args, device)
    model.eval()
    model.decoder.to(dtype)
    fd = FastDecoder(model, device=device, cuda_graphs=not args.no_cuda_graphs)
    q_model = q_fd = None
    if args.int8 and device.type == "cpu":
        from torch.ao.quantization import quantize_dynamic

        q_model = copy.copy(model)
        q_model.decoder = quantize_dynamic(copy.deepcopy(model.decoder), {torch.nn.Linear}, dtype=torch.qint8)
        q_fd = FastDecoder(q_model, device=device)
    frame_rate = int(model.config.audio_encoder.frame_rate)
    kc = fd.kc
    frames = max(1, round(args.seconds * frame_rate))
    n_new = frames + kc - 1
    print(json.dumps({"model": name, "device": str(device), "dtype": str(dtype), "torch": torch.__version__,
                      "seconds": frames / frame_rate, "steps": n_new}), flush=True)  # fmt: skip
    for b in [int(x) for x in args.batches.split(",")]:
        ids = torch.randint(5, 200, (b, 12), device=device)
        mask = torch.ones_like(ids)
        run_hf(model, ids, mask, 8, device)  # warm-up both paths (allocator, kernels, graphs)
        run_fast(model, fd, ids, mask, 8, device, dtype)
        hf_s = run_hf(model, ids, mask, n_new, device)
        fast_s = run_fast(model, fd, ids, mask, frames, device, dtype)
        audio = b * frames / frame_rate
        row = {
            "batch": b,
            "hf_steps_per_s": round(n_new / hf_s, 2),
            "fast_steps_per_s": round(n_new / fast_s, 2),
            "hf_x_realtime": round(audio / hf_s, 3),
            "fast_x_realtime": round(audio / fast_s, 3),
            "speedup": round(hf_s / fast_s, 2),
        }
        if q_fd is not None:
            run_fast(q_model, q_fd, ids, mask, 8, device, dtype)
            q_s = run_fast(q_model, q_fd, ids, mask, frames, device, dtype)
            row.update(int8_steps_per_s=round(n_new / q_s, 2), int8_speedup_vs_hf=round(hf_s / q_s, 2))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
