"""MusicGen decoder weights laid out for the one-token decode step: fused projections, optional int8.

A decode step at batch 1 multiplies two rows (conditional and unconditional) by every weight of the
decoder: it is a stream of small matrix products whose cost is reading the weights plus a fixed
cost per operator (dispatch and, on a busy CPU, a thread barrier per parallel region). Fusing the
self-attention q/k/v projections into one product and the codebook heads into another removes
~70 operators per step without changing a single bit of the float results (the fused product
computes each output element with the same reduction; the parity tests check this against
`generate()`).

Float weights are fused without a copy: the model's own q/k/v and head weights become views of the
fused tensor, so `generate()` still works on the same model and memory does not grow.

`quantize="int8"` (CPU) replaces the fused float products with dynamic int8 ones
(`torch.ao` dynamic quantization, per-output-channel weight scales): a quarter of the weight bytes
per step. The tokens are no longer those of the float model; `bench/musicgen.py` prints how often they agree.
The float model stays in memory next to the int8 copy (the text encoder, cross-attention keys and
values of the prompt and `generate()` still use it).

`PackedDecoder.steps` holds each layer's pieces as plain callables on the underlying ops
(`F.linear`, `torch.layer_norm`, `quantized::linear_dynamic`) rather than modules: at batch 1 a
step makes ~250 such calls, and `nn.Module.__call__` plus the dynamic-quantized Linear's Python
wrapper cost a few microseconds each. The ops and arguments are the modules' own, so the results
are bit for bit those of the modules.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

QUANTIZE_MODES = ("none", "int8")


@dataclass
class PackedLayer:
    """One decoder layer: norms, activation and the products of the decode step."""

    ln_self: nn.Module
    ln_cross: nn.Module
    ln_ffn: nn.Module
    act: Any
    qkv: nn.Module  # (D -> 3D) self-attention q, k, v in one product
    out: nn.Module
    cross_q: nn.Module
    cross_out: nn.Module
    fc1: nn.Module
    fc2: nn.Module


class StepFns(NamedTuple):
    """One layer's pieces of the decode step as plain callables (see the module docstring)."""

    ln_self: Callable
    qkv: Callable
    out: Callable
    ln_cross: Callable
    cross_q: Callable
    cross_out: Callable
    ln_ffn: Callable
    fc1: Callable
    act: Callable
    fc2: Callable


class PackedDecoder:
    """The decoder's layers and heads as fused (optionally int8) products. Built once per model."""

    def __init__(self, core: nn.Module, heads: nn.ModuleList, *, quantize: str = "none") -> None:
        if quantize not in QUANTIZE_MODES:
            raise ValueError(f"unknown quantize mode {quantize!r}; expected one of {QUANTIZE_MODES}")
        self.quantize = quantize
        products = nn.ModuleList()
        for layer in core.layers:
            sa, ca = layer.self_attn, layer.encoder_attn
            products.append(
                nn.ModuleDict(
                    dict(
                        qkv=fuse_linears([sa.q_proj, sa.k_proj, sa.v_proj]),
                        out=sa.out_proj,
                        cross_q=ca.q_proj,
                        cross_out=ca.out_proj,
                        fc1=layer.fc1,
                        fc2=layer.fc2,
                    )
                )
            )
        products.append(fuse_linears(list(heads)))
        if quantize == "int8":
            _quantize_int8(products)
        self.heads = products[-1]
        self.layers = [
            PackedLayer(
                ln_self=layer.self_attn_layer_norm,
                ln_cross=layer.encoder_attn_layer_norm,
                ln_ffn=layer.final_layer_norm,
                act=layer.activation_fn,
                **dict(p.items()),
            )
            for layer, p in zip(core.layers, products[:-1], strict=True)
        ]
        self.steps = [
            StepFns(
                ln_self=_norm_fn(pl.ln_self),
                qkv=_linear_fn(pl.qkv),
                out=_linear_fn(pl.out),
                ln_cross=_norm_fn(pl.ln_cross),
                cross_q=_linear_fn(pl.cross_q),
                cross_out=_linear_fn(pl.cross_out),
                ln_ffn=_norm_fn(pl.ln_ffn),
                fc1=_linear_fn(pl.fc1),
                act=_act_fn(pl.act),
                fc2=_linear_fn(pl.fc2),
            )
            for pl in self.layers
        ]
        self.heads_fn = _linear_fn(self.heads)


def _linear_fn(m: nn.Module) -> Callable:
    """`m`'s forward without the module machinery: the same op with the same arguments."""
    if type(m) is nn.Linear:
        return functools.partial(F.linear, weight=m.weight, bias=m.bias)
    packed = getattr(getattr(m, "_packed_params", None), "_packed_params", None)
    if packed is not None and m._packed_params.dtype == torch.qint8:
        # torch.ao's dynamic Linear (version >= 4) calls exactly this; its output is already float.
        reduce_range = m.version is not None and m.version >= 4
        op = torch.ops.quantized.linear_dynamic.default
        return lambda x: op(x, packed, reduce_range)
    return m


def _norm_fn(m: nn.Module) -> Callable:
    if type(m) is nn.LayerNorm and len(m.normalized_shape) == 1:
        w, b, shape, eps = m.weight, m.bias, tuple(m.normalized_shape), m.eps
        return lambda x: torch.layer_norm(x, shape, w, b, eps, torch.backends.cudnn.enabled)
    return m


def _act_fn(act: Any) -> Callable:
    # transformers' GELUActivation forwards to `self.act` (F.gelu unless asked for its Python gelu).
    inner = getattr(act, "act", None)
    return inner if inner is F.gelu else act


def _quantize_int8(products: nn.Module) -> None:
    # torch.ao's eager dynamic quantization is deprecated upstream in favour of torchao; it still
    # ships and runs fbgemm's int8 kernels without torch.compile. Silence its notices.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # inplace swaps the modules inside `products` only; the model keeps its float modules.
        quantize_dynamic(products, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


def fuse_linears(linears: list[nn.Linear]) -> nn.Linear:
    """One Linear computing `cat([l(x) for l in linears], -1)`. The originals' weights are rebound
    to views of the fused weight (no copy; calling this again on them reuses that storage)."""
    ws = [lin.weight for lin in linears]
    rows = sum(int(w.shape[0]) for w in ws)
    cols = int(ws[0].shape[1])
    with torch.no_grad():
        fused = _adjacent(ws, rows, cols)
        if fused is None:
            fused = torch.cat([w.detach() for w in ws])
            start = 0
            for lin in linears:
                n = int(lin.weight.shape[0])
                lin.weight = nn.Parameter(fused[start : start + n], requires_grad=False)
                start += n
        bias = None
        if any(lin.bias is not None for lin in linears):
            bias = torch.cat(
                [
                    lin.bias.detach() if lin.bias is not None else fused.new_zeros(lin.weight.shape[0])
                    for lin in linears
                ]
            )
    out = nn.Linear(cols, rows, bias=bias is not None, device="meta")
    out.weight = nn.Parameter(fused, requires_grad=False)
    if bias is not None:
        out.bias = nn.Parameter(bias, requires_grad=False)
    return out


def _adjacent(ws: list[torch.Tensor], rows: int, cols: int) -> torch.Tensor | None:
    """The fused tensor when `ws` already lie back to back in one storage (a second FastDecoder on
    the same model), else None."""
    first = ws[0]
    ptr, offset = first.untyped_storage().data_ptr(), first.storage_offset()
    for w in ws:
        if not w.is_contiguous() or w.untyped_storage().data_ptr() != ptr or w.storage_offset() != offset:
            return None
        offset += w.numel()
    return first.detach().as_strided((rows, cols), (cols, 1))
