"""Benchmark: Harmonia's MusicGen decode loop against transformers `generate()`, same run, same model.

For each batch size, three paths run on the same model object, inputs, guidance (3.0), top-k (250)
and length, alternately (`--reps` rounds, the order rotating each round) so that load from other
processes hits all of them alike; medians are printed with the load average seen by each run:

  hf_fp32    `generate()` (text encoder + its decode loop + EnCodec)
  fast_fp32  the engine's path: text encoder + FastDecoder + EnCodec, same float weights
  fast_int8  the same with the decoder's products dynamically quantized to int8 (CPU only)

steps/s is decode forward passes per second of the decode loop alone (the first is the prefill);
for `generate()` the loop time is its total minus the median text-encoder and EnCodec times of the
same batch (measured on the fast paths, same inputs and frame count). x_realtime is seconds of
audio (all rows) per wall second end to end. Ratios are against hf_fp32.

With --int8 (default on CPU) it also prints how closely the int8 decoder follows the float one:
teacher-forced over a float32 greedy sequence, the share of positions where int8's top-1 token is
float32's top-1, where it is in float32's top-5, and the mean KL(float32 || int8) of the softmax.

  python bench/musicgen.py                          # tiny random checkpoint (built on the fly)
  python bench/musicgen.py --size small --seconds 2 # musicgen-small architecture, random weights
  python bench/musicgen.py --model facebook/musicgen-small --batches 1,8,32

Random weights are fine for speed: the work per step does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from harmonia.engines.musicgen.decode import Conditioning, FastDecoder, RowSpec

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
    torch.manual_seed(0)
    with torch.device(device):
        model = MusicgenForConditionalGeneration(cfg)
    gen = model.generation_config
    gen.decoder_start_token_id = gen.pad_token_id = 2048
    return model


def load(args, device: torch.device):
    from transformers import MusicgenForConditionalGeneration

    if args.size:
        return build_random(args.size, device), f"random {args.size}"
    ref = args.model
    if ref is None:
        from harmonia.engines.musicgen.tiny import make_tiny_musicgen

        ref = str(make_tiny_musicgen(Path(tempfile.mkdtemp()) / "tiny"))
    return MusicgenForConditionalGeneration.from_pretrained(ref).to(device), ref


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_hf(model, ids, mask, n_new: int, device) -> dict:
    sync(device)
    t0 = time.perf_counter()
    model.generate(
        input_ids=ids, attention_mask=mask, do_sample=True, guidance_scale=3.0, top_k=250,
        max_new_tokens=n_new,
    )  # fmt: skip
    sync(device)
    return {"total": time.perf_counter() - t0, "load": os.getloadavg()[0]}


def encode_text(model, ids, mask, dtype):
    h = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    if getattr(model, "enc_to_dec_proj", None) is not None:
        h = model.enc_to_dec_proj(h)
    return Conditioning((h * mask[..., None]).to(dtype), mask)


def run_fast(model, fd: FastDecoder, ids, mask, frames: int, device, dtype) -> dict:
    sync(device)
    t0 = time.perf_counter()
    cond = encode_text(model, ids, mask, dtype)
    sync(device)
    t1 = time.perf_counter()
    rows = [RowSpec(new_frames=frames, guidance_scale=3.0, top_k=250, seed=i) for i in range(ids.shape[0])]
    codes = fd.decode(cond, rows)
    sync(device)
    t2 = time.perf_counter()
    model.audio_encoder.decode(torch.stack(codes).to(device)[None], [None] * len(codes))
    sync(device)
    t3 = time.perf_counter()
    return {"text": t1 - t0, "loop": t2 - t1, "codec": t3 - t2, "total": t3 - t0, "load": os.getloadavg()[0]}


def int8_agreement(model, fd: FastDecoder, q_fd: FastDecoder, ids, mask, frames: int, dtype) -> dict:
    """Teacher-forced comparison of the int8 decoder with float32 over a float32 greedy sequence."""
    cond = encode_text(model, ids, mask, dtype)
    rows = [RowSpec(new_frames=frames, guidance_scale=3.0, temperature=0.0) for _ in range(ids.shape[0])]
    codes = torch.stack(fd.decode(cond, rows))
    ref, free = fd.teacher_forced_scores(cond, codes)
    got, _ = q_fd.teacher_forced_scores(cond, codes)
    ref, got = ref[free], got[free]  # (N, V) scores at the positions the model chooses
    ref_top1, got_top1 = ref.argmax(-1), got.argmax(-1)
    top5 = ref.topk(5, dim=-1).indices
    kl = torch.nn.functional.kl_div(
        got.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="batchmean"
    )
    return {
        "int8_check_positions": int(ref.shape[0]),
        # sanity check of the scoring itself: float32's own top-1 should be its greedy tokens
        "fp32_top1_is_greedy_pct": round(100 * (ref_top1 == codes.reshape(-1)).float().mean().item(), 2),
        "int8_top1_agree_pct": round(100 * (ref_top1 == got_top1).float().mean().item(), 2),
        "int8_top1_in_fp32_top5_pct": round(
            100 * (top5 == got_top1[:, None]).any(-1).float().mean().item(), 2
        ),
        "int8_mean_kl": round(kl.item(), 5),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="local dir or hub id; default: a tiny random checkpoint")
    ap.add_argument("--size", choices=sorted(DECODERS), help="real architecture with random weights")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=3, help="alternating rounds per batch (medians)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None, help="default: on CPU")
    ap.add_argument("--no-cuda-graphs", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    use_int8 = (device.type == "cpu") if args.int8 is None else args.int8 and device.type == "cpu"
    model, name = load(args, device)
    model.eval()
    model.decoder.to(dtype)
    paths = {"fast_fp32": FastDecoder(model, device=device, cuda_graphs=not args.no_cuda_graphs)}
    if use_int8:
        paths["fast_int8"] = FastDecoder(model, device=device, quantize="int8")
    frame_rate = int(model.config.audio_encoder.frame_rate)
    kc = paths["fast_fp32"].kc
    frames = max(1, round(args.seconds * frame_rate))
    n_new = frames + kc - 1  # decode forward passes, prefill included, for both loops
    head = {"model": name, "device": str(device), "dtype": str(dtype), "torch": torch.__version__}
    head.update(threads=torch.get_num_threads(), seconds=frames / frame_rate, steps=n_new, reps=args.reps)
    print(json.dumps(head), flush=True)
    names = ["hf_fp32", *paths]
    for b in [int(x) for x in args.batches.split(",")]:
        ids = torch.randint(5, 200, (b, 12), device=device)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            run_hf(model, ids, mask, 4, device)  # warm-up (allocator, kernels, graphs)
            for fd in paths.values():
                run_fast(model, fd, ids, mask, 4, device, dtype)
            runs: dict[str, list[dict]] = {n: [] for n in names}
            for r in range(args.reps):
                for n in names[r % len(names) :] + names[: r % len(names)]:
                    if n == "hf_fp32":
                        res = run_hf(model, ids, mask, n_new, device)
                    else:
                        res = run_fast(model, paths[n], ids, mask, frames, device, dtype)
                    runs[n].append(res)
                    print(
                        json.dumps(
                            {"batch": b, "rep": r, "path": n, **{k: round(v, 3) for k, v in res.items()}}
                        )
                    )
        med = {n: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for n, rs in runs.items()}
        fast = [runs[n] for n in paths]
        text = statistics.median(x["text"] for rs in fast for x in rs)
        codec = statistics.median(x["codec"] for rs in fast for x in rs)
        med["hf_fp32"]["loop"] = max(med["hf_fp32"]["total"] - text - codec, 1e-9)
        audio = b * frames / frame_rate
        row: dict = {"batch": b, "text_s": round(text, 3), "codec_s": round(codec, 3)}
        for n in names:
            m = med[n]
            row[f"{n}_steps_per_s"] = round(n_new / m["loop"], 2)
            row[f"{n}_x_realtime"] = round(audio / m["total"], 3)
            row[f"{n}_load"] = round(m["load"], 2)
        for n in paths:
            row[f"{n}_vs_hf_steps"] = round(med["hf_fp32"]["loop"] / med[n]["loop"], 2)
            row[f"{n}_vs_hf_realtime"] = round(med["hf_fp32"]["total"] / med[n]["total"], 2)
        print(json.dumps(row), flush=True)
    if use_int8:
        ids = torch.randint(5, 200, (1, 12), device=device)
        with torch.inference_mode():
            check = int8_agreement(
                model, paths["fast_fp32"], paths["fast_int8"], ids, torch.ones_like(ids), frames, dtype
            )
        print(json.dumps(check), flush=True)


if __name__ == "__main__":
    main()
