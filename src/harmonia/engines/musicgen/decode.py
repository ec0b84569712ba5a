"""MusicGen's autoregressive decode loop, written for speed on the transformers modules.

`generate()` spends most of its time in Python: it rebuilds masks, grows a dynamic cache with
`torch.cat`, re-applies the delay pattern to the whole sequence and walks a list of logits
processors at every step. This loop keeps the same weights and the same arithmetic but:

- a static KV cache per layer (keys and values in one tensor, written with one strided copy, or
  one `index_copy_` at a device-tensor position under CUDA graphs), preallocated for the whole
  sequence; cross-attention keys/values of the text are computed once per decode, not per step;
- fused products (`musicgen_packed`): self-attention q/k/v in one matrix product and the codebook
  heads in another, only for the last position; optionally int8 on CPU;
- the delay pattern is a precomputed `forced` tensor (`-1` where the model chooses, otherwise the
  pad/prompt token that must be there), applied with one `torch.where` per step;
- classifier-free guidance, temperature, top-k and top-p are tensor ops with per-row parameters, so
  requests with different settings share one batch;
- rows finish at their own length and are dropped from the batch (KV rows compacted) so finished
  requests stop costing compute;
- on CUDA the single-token step is captured once into a CUDA graph and replayed (the step has
  static shapes; positions live in a device tensor), which removes the host overhead that makes
  `generate()` run at ~17 steps/s whatever the model size.

Greedy decoding and `torch.multinomial` sampling with a shared generator give the same tokens as
`generate()` (tests check this on a tiny checkpoint). The engine samples with a per-row
counter-based generator instead, so a seed gives the same audio whichever batch it lands in.

Layout of the token sequence (as in transformers): position 0 is the start token; codebook `k` of
channel-codebook index `c` holds frame `j` at position `c + 1 + j`; positions `<= c` and past the
end are pad.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harmonia.engines.musicgen.packed import PackedDecoder

_M32 = 0xFFFFFFFF


@dataclass
class RowSpec:
    """One sequence to decode: optional prompt codes `(K, Lp)`, frames to add and sampling settings."""

    new_frames: int
    prompt: torch.Tensor | None = None
    guidance_scale: float = 3.0
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 250  # 0 = no top-k
    top_p: float = 1.0  # 1 = no nucleus filter
    seed: int = 0
    salt: int = 0  # mixed into the counter-based sampler (e.g. the window index)

    @property
    def prompt_frames(self) -> int:
        return 0 if self.prompt is None else int(self.prompt.shape[-1])


@dataclass
class Conditioning:
    """Text conditioning for the rows, in row order: projected encoder states and their mask."""

    hidden: torch.Tensor  # (B, S, D) already projected and masked, decoder dtype
    mask: torch.Tensor  # (B, S) long/bool, 1 = real token


TickFn = Callable[[int, list[int], Callable[[int], torch.Tensor]], set[int]]


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # "lowbias32" integer hash; int64 arithmetic masked to 32 bits (products wrap identically).
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


class FastDecoder:
    """Runs MusicGen's decoder with a static cache. One instance per loaded model; not thread-safe
    (the engine's batcher calls it from one thread)."""

    def __init__(
        self, model, *, device=None, cuda_graphs: bool = True, quantize: str = "none", graph_runner=None
    ) -> None:
        """`graph_runner(decoder, state, generator)` captures one step and `.replay()`s it: CUDA
        graphs by default (CUDA only); another runner (e.g. one that replays the captured step's code
        eagerly, for tests on the CPU) makes the decoder take the graph path on any device."""
        dec = model.decoder
        self.core = dec.model.decoder
        self.heads = dec.lm_heads
        cfg = model.config.decoder
        self.K = int(cfg.num_codebooks)
        self.channels = int(cfg.audio_channels)
        self.kc = self.K // 2 if self.channels == 2 else self.K
        self.H = int(cfg.num_attention_heads)
        self.hd = int(cfg.hidden_size) // self.H
        self.V = int(cfg.vocab_size)
        gen = model.generation_config
        start = getattr(gen, "decoder_start_token_id", None)
        self.pad_id = int(start if start is not None else cfg.pad_token_id)
        self.layers = list(self.core.layers)
        self.packed = PackedDecoder(self.core, self.heads, quantize=quantize)
        self.quantize = quantize
        self.scaling = self.hd**-0.5
        if device is None:
            device = self.core.embed_positions.weights.device
        self.device = torch.device(device)
        self.graph_runner = graph_runner or _Graph
        self.cuda_graphs = bool(cuda_graphs) and (self.device.type == "cuda" or graph_runner is not None)
        self.forward_passes = 0  # counted for metrics and tests (shared passes under batching)

    # ---------------------------------------------------------------- delay pattern
    def codebook_offsets(self) -> torch.Tensor:
        c = torch.arange(self.K)
        return c // 2 if self.channels == 2 else c

    def build_forced(self, rows: Sequence[RowSpec]) -> tuple[torch.Tensor, list[int], list[int]]:
        """`forced (B, K, T)`: -1 where the model samples, else the token that must be there.
        Returns it with each row's decoder prompt length P (start + prompt) and sequence length."""
        offs = self.codebook_offsets()
        plen = [1 + r.prompt_frames for r in rows]
        total = [r.prompt_frames + r.new_frames + self.kc for r in rows]
        T = max(total)
        forced = torch.full((len(rows), self.K, T), self.pad_id, dtype=torch.long)
        t = torch.arange(T)
        for i, r in enumerate(rows):
            free = (t[None, :] >= offs[:, None] + plen[i]) & (
                t[None, :] < offs[:, None] + total[i] - self.kc + 1
            )
            forced[i][free] = -1
            if r.prompt is not None:
                for k in range(self.K):
                    c = int(offs[k])
                    forced[i, k, c + 1 : c + 1 + r.prompt_frames] = r.prompt[k].to(torch.long).cpu()
        return forced, plen, total

    def extract(self, seq_row: torch.Tensor, frames: int) -> torch.Tensor:
        """Undo the delay pattern of one row `(K, T)`: the first `frames` frames, `(K, frames)`."""
        offs = self.codebook_offsets().tolist()
        return torch.stack([seq_row[k, offs[k] + 1 : offs[k] + 1 + frames] for k in range(self.K)])

    # ---------------------------------------------------------------- model pieces
    def _embed(self, tokens: torch.Tensor, cfg: bool) -> torch.Tensor:
        # Same summation order as transformers (sum() from 0) so values match bit for bit.
        emb = sum(self.core.embed_tokens[k](tokens[:, k]) for k in range(self.K))
        return emb.repeat(2, 1, 1) if cfg else emb

    def _layers(self, h, st: _State, write_at, kv_len: int, self_mask, causal: bool, every: bool = False):
        """`write_at`: the first position written (int), or a device tensor of positions (graphs)."""
        H, hd = self.H, self.hd
        for li, f in enumerate(self.packed.steps):
            R, n, D = h.shape
            qkv = f.qkv(f.ln_self(h)).view(R, n, 3, H, hd)
            cache = st.kv[li]  # (2, R, H, T, hd)
            kv = qkv[:, :, 1:].permute(2, 0, 3, 1, 4)
            if isinstance(write_at, int):  # a plain strided copy; index_copy_ costs ~4x more here
                cache[:, :, :, write_at : write_at + n].copy_(kv)
            else:
                cache.index_copy_(3, write_at, kv)
            a = F.scaled_dot_product_attention(
                qkv[:, :, 0].transpose(1, 2), cache[0, :, :, :kv_len], cache[1, :, :, :kv_len],
                attn_mask=self_mask, is_causal=causal, scale=self.scaling,
            )  # fmt: skip
            h = h + f.out(a.transpose(1, 2).reshape(R, n, D))
            q = f.cross_q(f.ln_cross(h)).view(R, n, H, hd).transpose(1, 2)
            a = F.scaled_dot_product_attention(
                q, st.ck[li], st.cv[li], attn_mask=st.cmask, scale=self.scaling
            )
            h = h + f.cross_out(a.transpose(1, 2).reshape(R, n, D))
            h = h + f.fc2(f.act(f.fc1(f.ln_ffn(h))))
        heads = self.packed.heads_fn
        if every:  # all positions (teacher-forced scoring): (R, K, n, V)
            h = self.core.layer_norm(h)
            return heads(h).view(h.shape[0], h.shape[1], self.K, self.V).transpose(1, 2).float()
        h = self.core.layer_norm(h[:, -1])  # only the last position is sampled
        return heads(h).view(h.shape[0], self.K, self.V).float()

    def _select(self, logits: torch.Tensor, st: _State, pos, generator) -> torch.Tensor:
        """CFG + warpers + sampling for the token at `pos + 1`; returns forced-applied tokens (B, K)."""
        B = st.B
        if st.cfg:
            cond, uncond = logits[:B], logits[B:]
            mixed = uncond + (cond - uncond) * st.gs
            scores = torch.where(st.use_cfg, mixed, cond)
        else:
            scores = logits
        greedy_tok = scores.argmax(-1)
        if st.all_greedy:
            tok = greedy_tok
        else:
            s = scores / st.temp
            if st.kmax < self.V:  # top-k values via topk of the largest k asked for (cheaper than sort)
                kth = s.topk(st.kmax, dim=-1)[0].gather(-1, st.topk_idx)
                s = s.masked_fill(s < kth, float("-inf"))
            if st.need_topp:  # the nucleus filter, op for op as transformers' TopPLogitsWarper
                srt, idx = s.sort(-1)
                cum = srt.softmax(-1).cumsum(-1)
                drop = cum <= st.topp_thr
                drop[..., -1] = False
                s = s.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
            probs = s.softmax(-1)
            if generator is not None:
                tok = torch.multinomial(probs.view(-1, self.V), 1, generator=generator).view(B, self.K)
            else:
                base = ((pos + 1) * self.K + st.kidx) * 0x9E3779B1 + st.salt  # (B, K)
                u = _mix32(_mix32(base & _M32) ^ st.seeds)
                u = ((u >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)
                cdf = probs.cumsum(-1)
                target = (u * cdf[..., -1]).unsqueeze(-1)
                tok = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=self.V - 1)
            tok = torch.where(st.greedy, greedy_tok, tok)
        nxt = st.forced.index_select(2, (pos + 1).view(1)).squeeze(2)
        return torch.where(nxt == -1, tok, nxt)

    def _step(self, st: _State, generator, graph_mode: bool) -> None:
        """One decode step at position `st.pos` (device tensor); writes `seq[:, :, pos+1]`."""
        pos = st.pos
        tokens = st.seq.index_select(2, pos.view(1))  # (B, K, 1)
        h = self._embed(tokens, st.cfg) + self.core.embed_positions.weights.index_select(0, pos.view(1)).to(
            st.dtype
        )
        if graph_mode:
            mask = (st.arange_t <= pos).view(1, 1, 1, -1)
            logits = self._layers(h, st, pos.view(1), st.T, mask, False)
        else:
            p = int(st.pos_host)
            logits = self._layers(h, st, p, p + 1, None, False)
        tok = self._select(logits, st, pos, generator)
        st.seq.index_copy_(2, (pos + 1).view(1), tok.unsqueeze(-1))
        pos.add_(1)

    # ---------------------------------------------------------------- public entry points
    @torch.inference_mode()
    def teacher_forced_scores(
        self, cond: Conditioning, codes: torch.Tensor, guidance_scale: float = 3.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided scores of every token of `codes (B, K, frames)` given the ones before it, in one
        pass: `(scores (B, K, T-1, V), free (B, K, T-1))`, where `free` marks the positions the
        model chooses (not delay-pattern pads). For quality checks (int8 against float32)."""
        rows = [RowSpec(new_frames=0, prompt=c, guidance_scale=guidance_scale) for c in codes]
        forced, _, _ = self.build_forced(rows)
        st = _State.create(self, cond, rows, forced)
        n = st.T - 1
        h = self._embed(st.seq[:, :, :n], st.cfg) + self.core.embed_positions.weights[:n].to(st.dtype)
        logits = self._layers(h, st, 0, n, None, True, every=True)
        if st.cfg:
            cond_l, uncond = logits[: st.B], logits[st.B :]
            logits = torch.where(st.use_cfg[..., None], uncond + (cond_l - uncond) * st.gs[..., None], cond_l)
        free = torch.zeros_like(forced[:, :, 1:], dtype=torch.bool)
        offs = self.codebook_offsets()
        for k in range(self.K):  # targets at positions c+1 .. c+frames hold codes, the rest are pads
            c = int(offs[k])
            free[:, k, c : c + codes.shape[-1]] = True
        return logits, free

    # ---------------------------------------------------------------- decoding
    @torch.inference_mode()
    def decode(
        self,
        cond: Conditioning,
        rows: Sequence[RowSpec],
        *,
        generator: torch.Generator | None = None,
        on_tick: TickFn | None = None,
        tick_every: int = 16,
    ) -> list[torch.Tensor | None]:
        """Decode all rows together; return each row's codes `(K, prompt + new frames)` on the CPU,
        or None for rows that `on_tick` dropped. `generator` switches to `torch.multinomial`
        sampling (only to compare with `generate()`); otherwise each row samples from its seed."""
        forced, plen, total = self.build_forced(rows)
        # torch.multinomial with a host generator cannot be captured into a graph.
        graphs = self.cuda_graphs and generator is None
        st = _State.create(self, cond, rows, forced)
        p0 = min(plen)
        results: list[torch.Tensor | None] = [None] * len(rows)
        # Prefill positions [0, p0) in one pass (as generate() does), then sample position p0.
        h = self._embed(st.seq[:, :, :p0], st.cfg) + self.core.embed_positions.weights[:p0].to(st.dtype)
        logits = self._layers(h, st, 0, p0, None, p0 > 1)
        st.pos.fill_(p0 - 1)
        st.seq[:, :, p0] = self._select(logits, st, st.pos, generator)
        st.pos.fill_(p0)
        st.pos_host = p0
        self.forward_passes += 1
        order = list(range(len(rows)))  # row id of each state row
        live = set(order)
        graph: _Graph | None = None
        while True:
            filled = st.pos_host  # the last position written
            finished = {i for i in live if total[i] - 1 <= filled}
            dropped: set[int] = set()
            if on_tick is not None and (filled - p0) % tick_every == 0 and finished != live:

                def read(
                    i: int, _st: _State = st, _order: list[int] = order, _f: int = filled
                ) -> torch.Tensor:
                    n = max(0, min(_f - self.kc + 1, rows[i].prompt_frames + rows[i].new_frames))
                    return self.extract(_st.seq[_order.index(i)].cpu(), n)

                dropped = set(on_tick(filled, sorted(live - finished), read)) & (live - finished)
            for i in finished:
                results[i] = self.extract(
                    st.seq[order.index(i)].cpu(), rows[i].prompt_frames + rows[i].new_frames
                )
            live -= finished | dropped
            if not live:
                break
            # Drop finished rows from the batch. With CUDA graphs each new row count costs a
            # capture, so there finished rows ride along until half of the batch is done.
            if len(live) < len(order) and (not graphs or len(live) <= len(order) // 2):
                keep = [i for i in order if i in live]
                st = st.subset([order.index(i) for i in keep])
                order = keep
                graph = None
            if graphs:
                if graph is None:
                    graph = self.graph_runner(self, st, generator)
                graph.replay()
            else:
                self._step(st, generator, graph_mode=False)
            st.pos_host += 1
            self.forward_passes += 1
        return results


class _State:
    """Static buffers of one decode: caches, sequence, per-row sampling parameters."""

    @classmethod
    def create(cls, dec: FastDecoder, cond: Conditioning, rows: Sequence[RowSpec], forced) -> _State:
        st = cls()
        dev = dec.device
        dtype = cond.hidden.dtype
        B = len(rows)
        st.B, st.dtype = B, dtype
        st.cfg = any(r.guidance_scale > 1 for r in rows)
        R = 2 * B if st.cfg else B
        st.T = forced.shape[-1]
        L = len(dec.layers)
        # Zeros, not empty: a graph step attends over the whole cache with a mask, and a masked
        # position still multiplies its value by a zero weight, so NaN/Inf left in reused device
        # memory would poison every output (the eager step reads only the written prefix).
        st.kv = [torch.zeros(2, R, dec.H, st.T, dec.hd, device=dev, dtype=dtype) for _ in range(L)]
        hidden, mask = cond.hidden, cond.mask.to(dev).bool()
        if st.cfg:  # the unconditional half: zero states, nothing to attend to
            hidden = torch.cat([hidden, torch.zeros_like(hidden)])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        # A fully masked row would give NaN; its values are all zero (no bias), so letting it
        # attend everywhere yields the same zero output that transformers computes.
        mask = mask | ~mask.any(-1, keepdim=True)
        st.cmask = None if bool(mask.all()) else mask[:, None, None, :]
        S = hidden.shape[1]
        st.ck, st.cv = [], []
        for layer in dec.layers:
            ca = layer.encoder_attn
            st.ck.append(ca.k_proj(hidden).view(R, S, dec.H, dec.hd).transpose(1, 2).contiguous())
            st.cv.append(ca.v_proj(hidden).view(R, S, dec.H, dec.hd).transpose(1, 2).contiguous())
        st.forced = forced.to(dev)
        st.seq = torch.where(st.forced == -1, torch.zeros_like(st.forced), st.forced)
        f32 = dict(device=dev, dtype=torch.float32)
        st.gs = torch.tensor([max(r.guidance_scale, 1.0) for r in rows], **f32).view(B, 1, 1)
        st.use_cfg = torch.tensor([r.guidance_scale > 1 for r in rows], device=dev).view(B, 1, 1)
        st.greedy = torch.tensor([r.temperature <= 0 for r in rows], device=dev).view(B, 1)
        st.all_greedy = all(r.temperature <= 0 for r in rows)
        st.temp = torch.tensor([r.temperature if r.temperature > 0 else 1.0 for r in rows], **f32)
        st.temp = st.temp.view(B, 1, 1)
        ks = [(r.top_k if 0 < r.top_k <= dec.V else dec.V) - 1 for r in rows]
        st.topk_idx = torch.tensor(ks, device=dev).view(B, 1, 1).expand(B, dec.K, 1).contiguous()
        st.kmax = max(ks) + 1
        st.need_topp = any(r.top_p < 1 for r in rows)
        # 1 - p is computed in double, as transformers does, before it meets the float32 scores.
        st.topp_thr = torch.tensor([1.0 - r.top_p if r.top_p < 1 else 0.0 for r in rows], **f32)
        st.topp_thr = st.topp_thr.view(B, 1, 1)
        st.seeds = torch.tensor([r.seed & _M32 for r in rows], device=dev).view(B, 1)
        st.salt = torch.tensor([r.salt & _M32 for r in rows], device=dev).view(B, 1)
        st.kidx = torch.arange(dec.K, device=dev).view(1, dec.K)
        st.pos = torch.zeros((), dtype=torch.long, device=dev)
        st.pos_host = 0
        st.arange_t = torch.arange(st.T, device=dev)
        return st

    def subset(self, keep: list[int]) -> _State:
        """A new state with only rows `keep` (indices into this state's rows)."""
        st = _State()
        dev = self.pos.device
        kb = torch.tensor(keep, device=dev)
        kr = torch.cat([kb, kb + self.B]) if self.cfg else kb
        st.B, st.dtype, st.cfg, st.T = len(keep), self.dtype, self.cfg, self.T
        st.kv = [x.index_select(1, kr) for x in self.kv]
        st.ck = [x.index_select(0, kr) for x in self.ck]
        st.cv = [x.index_select(0, kr) for x in self.cv]
        st.cmask = None if self.cmask is None else self.cmask.index_select(0, kr)
        for name in (
            "forced",
            "seq",
            "gs",
            "use_cfg",
            "greedy",
            "temp",
            "topk_idx",
            "topp_thr",
            "seeds",
            "salt",
        ):
            setattr(st, name, getattr(self, name).index_select(0, kb))
        st.all_greedy, st.kmax, st.need_topp = self.all_greedy, self.kmax, self.need_topp
        st.kidx, st.arange_t = self.kidx, self.arange_t
        st.pos = self.pos.clone()
        st.pos_host = self.pos_host
        return st


class _Graph:
    """A CUDA graph of one decode step over a state's static buffers (CUDA only)."""

    def __init__(self, dec: FastDecoder, st: _State, generator) -> None:
        self.dec, self.st = dec, st
        pos0 = st.pos.clone()
        seq0 = st.seq.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the graph (allocator, kernels)
            dec._step(st, generator, graph_mode=True)
        torch.cuda.current_stream().wait_stream(stream)
        st.pos.copy_(pos0)
        st.seq.copy_(seq0)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            dec._step(st, generator, graph_mode=True)
        # Capturing does not run the step: state is as before, ready for the first replay.
        st.pos.copy_(pos0)
        st.seq.copy_(seq0)

    def replay(self) -> None:
        self.graph.replay()
