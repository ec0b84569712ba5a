"""Tiny DiffSinger voicebanks built by the tests: random weights, real files, real tensor names.

The test modules import the fixtures from here (a `conftest.py` in this folder would shadow the
`conftest` module other tests import helpers from).

Each model is a small torch module with the input/output names, dtypes and shapes of the openvpi
exports (see docs/diffsinger.md), exported with `torch.onnx.export` and laid out like a voicebank
that OpenUtau would load:

basic/   dsconfig.yaml, tiny.phonemes.txt, dictionary.txt (openvpi), tiny.onnx (acoustic with
         shallow-diffusion `depth` + `speedup`), dsvocoder/{vocoder.yaml, nsf_hifigan.onnx}
full/    dsconfig.yaml, tiny.phonemes.json, dsdict.yaml (OpenUtau), character.yaml, two speakers
         (*.emb), acoustic with energy/breathiness/gender/velocity/spk_embed + `steps`/`depth`
         (continuous acceleration), dsdur/ (linguistic in word mode + duration predictor),
         dsvariance/ (linguistic in phoneme mode + energy/breathiness predictor), dsvocoder/
"""

from __future__ import annotations

import json
import math
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402 - torch is optional; skip cleanly without it

__all__ = ["basic_engine", "basic_voicebank", "full_engine", "full_voicebank"]

SR, HOP, MELS, HIDDEN = 44100, 512, 128, 16
PHONEMES = ["<PAD>", "AP", "SP", "a", "e", "i", "k", "l", "m", "n", "o", "r", "s", "t", "u"]
TXT_DICT = {
    "la": "l a",
    "li": "l i",
    "ka": "k a",
    "sa": "s a",
    "to": "t o",
    "na": "n a",
    "mi": "m i",
    "ru": "r u",
}
YAML_ENTRIES = {
    **{k: v.split() for k, v in TXT_DICT.items()},
    "kan": ["k", "a", "n"],
    "star": ["s", "t", "a", "r"],
}
VOWELS = {"a", "e", "i", "o", "u"}


def _regulate(durations: Any, n_frames: Any) -> Any:
    """Frame -> token index from durations (the cumsum length regulator DiffSinger exports use)."""
    ends = torch.cumsum(durations, 1)
    idx = torch.arange(n_frames)[None, :, None]
    return (idx >= ends[:, None, :]).sum(-1).clamp(max=durations.shape[1] - 1)


def _gather(seq: Any, index: Any) -> Any:
    return torch.gather(seq, 1, index[..., None].expand(-1, -1, seq.shape[-1]))


class Acoustic(nn.Module):
    """tokens, durations, f0 (+ variances, gender, velocity, spk_embed, depth/steps/speedup) -> mel."""

    def __init__(self, extras: list[str]) -> None:
        super().__init__()
        self.extras = extras
        self.emb = nn.Embedding(len(PHONEMES), HIDDEN)
        self.cond = nn.Linear(
            1 + len([e for e in extras if e not in ("spk_embed", "depth", "steps", "speedup")]), HIDDEN
        )
        self.out = nn.Linear(HIDDEN, MELS)

    def forward(self, tokens: Any, durations: Any, f0: Any, *rest: Any) -> Any:
        kw = dict(zip(self.extras, rest, strict=True))
        h = _gather(self.emb(tokens), _regulate(durations, f0.shape[1]))
        curves = [torch.log2(f0.clamp(min=1.0) / 440.0)]
        curves += [kw[e] for e in self.extras if e not in ("spk_embed", "depth", "steps", "speedup")]
        h = torch.tanh(h + self.cond(torch.stack(curves, -1)))
        if "spk_embed" in kw:
            h = h + kw["spk_embed"]
        # the sampling controls change the result a little, as fewer diffusion steps would
        control = sum(kw[e].float().sum() for e in ("depth", "steps", "speedup") if e in kw)
        return -2.5 + 1.5 * torch.tanh(self.out(h) + 0.05 * torch.sin(control))


class Vocoder(nn.Module):
    """NSF-style: a sine source at f0 shaped by an envelope computed from the mel -> waveform."""

    def __init__(self) -> None:
        super().__init__()
        self.env = nn.Linear(MELS, 1)
        self.post = nn.Conv1d(1, 1, 9, padding=4)

    def forward(self, mel: Any, f0: Any) -> Any:
        f0_up = f0[:, :, None].expand(-1, -1, HOP).reshape(1, -1)
        phase = torch.cumsum(f0_up / SR, 1)
        source = torch.sin(2 * math.pi * (phase - torch.floor(phase)))
        amp = (0.2 + 0.8 * torch.sigmoid(self.env(mel))).expand(-1, -1, HOP).reshape(1, -1)
        wave = 0.5 * amp * source
        return torch.tanh(wave + 0.1 * self.post(wave[:, None, :])[:, 0, :])


class Linguistic(nn.Module):
    """tokens + (word_div, word_dur) or ph_dur -> encoder_out [1, T, H], x_masks [1, T] (bool)."""

    def __init__(self, word_mode: bool) -> None:
        super().__init__()
        self.word_mode = word_mode
        self.emb = nn.Embedding(len(PHONEMES), HIDDEN)
        self.dur = nn.Linear(1, HIDDEN)

    def forward(self, tokens: Any, *durs: Any) -> tuple[Any, Any]:
        if self.word_mode:
            word_div, word_dur = durs
            word_of_token = _regulate(word_div, tokens.shape[1])
            d = torch.gather(word_dur, 1, word_of_token).float()
        else:
            d = durs[0].float()
        enc = torch.tanh(self.emb(tokens) + self.dur(torch.log1p(d)[..., None]))
        return enc, tokens == 0


class DurPredictor(nn.Module):
    """encoder_out, x_masks, ph_midi -> ph_dur_pred [1, T] (frames, float)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(HIDDEN + 1, 1)

    def forward(self, encoder_out: Any, x_masks: Any, ph_midi: Any) -> Any:
        x = torch.cat([encoder_out, (ph_midi.float() / 127.0)[..., None]], -1)
        pred = 2.0 + 8.0 * torch.sigmoid(self.lin(x))[..., 0]
        return pred * (~x_masks).float()


class VariancePredictor(nn.Module):
    """encoder_out, ph_dur, pitch, energy, breathiness, retake, steps -> energy_pred, breathiness_pred."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(HIDDEN + 1, 2)

    def forward(
        self,
        encoder_out: Any,
        ph_dur: Any,
        pitch: Any,
        energy: Any,
        breathiness: Any,
        retake: Any,
        steps: Any,
    ) -> Any:
        h = _gather(encoder_out, _regulate(ph_dur, pitch.shape[1]))
        pred = -1.0 + torch.tanh(
            self.lin(torch.cat([h, (pitch / 127.0)[..., None]], -1)) + 0.01 * steps.float()
        )
        given = torch.stack([energy, breathiness], -1)
        out = torch.where(retake, pred, given)
        return out[..., 0], out[..., 1]


def _export(
    module: nn.Module,
    args: tuple[Any, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    axes: dict[str, dict[int, str]],
) -> None:
    torch.manual_seed(zlib.crc32(path.name.encode()))  # the same weights in every run
    for p in module.parameters():
        nn.init.normal_(p, std=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _yaml(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _tok(n: int = 3) -> Any:
    return torch.tensor([[2] + [3] * (n - 2) + [2]])


def _frame_axes(*names: str) -> dict[str, dict[int, str]]:
    return {n: {1: "n_frames"} for n in names}


def _write_vocoder(root: Path) -> None:
    folder = root / "dsvocoder"
    mel, f0 = torch.zeros(1, 10, MELS), torch.full((1, 10), 440.0)
    _export(
        Vocoder(),
        (mel, f0),
        folder / "nsf_hifigan.onnx",
        ["mel", "f0"],
        ["waveform"],
        {**_frame_axes("mel", "f0"), "waveform": {1: "n_samples"}},
    )
    _yaml(
        folder / "vocoder.yaml",
        {
            "name": "nsf_hifigan",
            "model": "nsf_hifigan.onnx",
            "sample_rate": SR,
            "hop_size": HOP,
            "num_mel_bins": MELS,
            "mel_fmin": 40,
            "mel_fmax": 16000,
            "mel_base": "10",
            "mel_scale": "slaney",
        },
    )


def _write_acoustic(path: Path, extras: list[str]) -> None:
    n = 10
    sample: dict[str, Any] = {
        "energy": torch.zeros(1, n),
        "breathiness": torch.zeros(1, n),
        "gender": torch.zeros(1, n),
        "velocity": torch.ones(1, n),
        "spk_embed": torch.zeros(1, n, HIDDEN),
        "depth": torch.tensor([0.5]) if "steps" in extras else torch.tensor([400]),
        "steps": torch.tensor([10]),
        "speedup": torch.tensor([10]),
    }
    args = (_tok(), torch.tensor([[3, 4, 3]]), torch.full((1, n), 440.0), *[sample[e] for e in extras])
    axes = {
        "tokens": {1: "n_tokens"},
        "durations": {1: "n_tokens"},
        **_frame_axes("f0", "mel"),
        **_frame_axes(*[e for e in extras if e not in ("depth", "steps", "speedup")]),
    }
    _export(Acoustic(extras), args, path, ["tokens", "durations", "f0", *extras], ["mel"], axes)


def build_basic(root: Path) -> Path:
    """openvpi-style export: dictionary.txt, phonemes.txt, shallow diffusion with int depth + speedup."""
    _write_acoustic(root / "tiny.onnx", ["depth", "speedup"])
    _write_vocoder(root)
    (root / "tiny.phonemes.txt").write_text("\n".join(PHONEMES) + "\n", encoding="utf-8")
    (root / "dictionary.txt").write_text(
        "".join(f"{k}\t{v}\n" for k, v in TXT_DICT.items()), encoding="utf-8"
    )
    _yaml(
        root / "dsconfig.yaml",
        {
            "phonemes": "tiny.phonemes.txt",
            "acoustic": "tiny.onnx",
            "vocoder": "nsf_hifigan",
            "use_key_shift_embed": False,
            "use_speed_embed": False,
            "use_energy_embed": False,
            "use_breathiness_embed": False,
            "use_shallow_diffusion": True,
            "max_depth": 400,
            "sample_rate": SR,
            "hop_size": HOP,
            "num_mel_bins": MELS,
            "mel_fmin": 40,
            "mel_fmax": 16000,
            "mel_base": "10",
            "mel_scale": "slaney",
        },
    )
    return root


def build_full(root: Path) -> Path:
    """OpenUtau-style bank: dsdict.yaml, phonemes.json, speakers, dsdur/ and dsvariance/ models."""
    extras = ["energy", "breathiness", "gender", "velocity", "spk_embed", "depth", "steps"]
    _write_acoustic(root / "tiny.onnx", extras)
    _write_vocoder(root)
    table = {p: i for i, p in enumerate(PHONEMES)}
    for folder in (root, root / "dsdur", root / "dsvariance"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tiny.phonemes.json").write_text(json.dumps(table), encoding="utf-8")
    rng = np.random.default_rng(7)
    for name in ("alto", "soprano"):
        rng.normal(size=HIDDEN).astype(np.float32).tofile(root / f"tiny.{name}.emb")
    _yaml(root / "character.yaml", {"name": "Tiny Test Singer"})
    symbols = [{"symbol": p, "type": "vowel" if p in VOWELS else "stop"} for p in PHONEMES[3:]]
    _yaml(
        root / "dsdict.yaml",
        {"symbols": symbols, "entries": [{"grapheme": g, "phonemes": p} for g, p in YAML_ENTRIES.items()]},
    )
    common = {
        "sample_rate": SR,
        "hop_size": HOP,
        "mel_base": "10",
        "mel_scale": "slaney",
        "num_mel_bins": MELS,
        "mel_fmin": 40,
        "mel_fmax": 16000,
    }
    _yaml(
        root / "dsconfig.yaml",
        {
            "phonemes": "tiny.phonemes.json",
            "acoustic": "tiny.onnx",
            "vocoder": "nsf_hifigan",
            "speakers": ["tiny.alto", "tiny.soprano"],
            "hidden_size": HIDDEN,
            "use_key_shift_embed": True,
            "use_speed_embed": True,
            "use_energy_embed": True,
            "use_breathiness_embed": True,
            "augmentation_args": {"random_pitch_shifting": {"range": [-5.0, 5.0]}},
            "use_continuous_acceleration": True,
            "use_variable_depth": True,
            "max_depth": 0.6,
            **common,
        },
    )
    word = (_tok(5), torch.tensor([[1, 2, 2]]), torch.tensor([[3, 6, 5]]))
    _export(
        Linguistic(word_mode=True),
        word,
        root / "dsdur" / "tiny.linguistic.onnx",
        ["tokens", "word_div", "word_dur"],
        ["encoder_out", "x_masks"],
        {
            "tokens": {1: "n_tokens"},
            "word_div": {1: "n_words"},
            "word_dur": {1: "n_words"},
            "encoder_out": {1: "n_tokens"},
            "x_masks": {1: "n_tokens"},
        },
    )
    enc, masks, midi = torch.zeros(1, 5, HIDDEN), torch.zeros(1, 5, dtype=torch.bool), torch.full((1, 5), 60)
    _export(
        DurPredictor(),
        (enc, masks, midi),
        root / "dsdur" / "tiny.dur.onnx",
        ["encoder_out", "x_masks", "ph_midi"],
        ["ph_dur_pred"],
        {
            "encoder_out": {1: "n_tokens"},
            "x_masks": {1: "n_tokens"},
            "ph_midi": {1: "n_tokens"},
            "ph_dur_pred": {1: "n_tokens"},
        },
    )
    _yaml(
        root / "dsdur" / "dsconfig.yaml",
        {
            "phonemes": "tiny.phonemes.json",
            "linguistic": "tiny.linguistic.onnx",
            "dur": "tiny.dur.onnx",
            "predict_dur": True,
            "hidden_size": HIDDEN,
            "sample_rate": SR,
            "hop_size": HOP,
        },
    )
    _export(
        Linguistic(word_mode=False),
        (_tok(3), torch.tensor([[3, 4, 3]])),
        root / "dsvariance" / "tiny.linguistic.onnx",
        ["tokens", "ph_dur"],
        ["encoder_out", "x_masks"],
        {
            "tokens": {1: "n_tokens"},
            "ph_dur": {1: "n_tokens"},
            "encoder_out": {1: "n_tokens"},
            "x_masks": {1: "n_tokens"},
        },
    )
    n = 10
    var_args = (
        torch.zeros(1, 3, HIDDEN),
        torch.tensor([[3, 4, 3]]),
        torch.full((1, n), 60.0),
        torch.zeros(1, n),
        torch.zeros(1, n),
        torch.ones(1, n, 2, dtype=torch.bool),
        torch.tensor([10]),
    )
    _export(
        VariancePredictor(),
        var_args,
        root / "dsvariance" / "tiny.variance.onnx",
        ["encoder_out", "ph_dur", "pitch", "energy", "breathiness", "retake", "steps"],
        ["energy_pred", "breathiness_pred"],
        {
            "encoder_out": {1: "n_tokens"},
            "ph_dur": {1: "n_tokens"},
            **_frame_axes("pitch", "energy", "breathiness", "retake", "energy_pred", "breathiness_pred"),
        },
    )
    _yaml(
        root / "dsvariance" / "dsconfig.yaml",
        {
            "phonemes": "tiny.phonemes.json",
            "linguistic": "tiny.linguistic.onnx",
            "variance": "tiny.variance.onnx",
            "predict_dur": False,
            "predict_energy": True,
            "predict_breathiness": True,
            "hidden_size": HIDDEN,
            "use_continuous_acceleration": True,
            "sample_rate": SR,
            "hop_size": HOP,
        },
    )
    return root


def _built(factory: pytest.TempPathFactory, kind: str) -> Path:
    """Build each voicebank once per session although two test modules import these fixtures."""
    root = factory.getbasetemp() / "diffsinger-voicebanks" / kind
    if not (root.parent / f"{kind}.done").is_file():
        (build_basic if kind == "basic" else build_full)(root)
        (root.parent / f"{kind}.done").touch()
    return root


@pytest.fixture(scope="session")
def basic_voicebank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _built(tmp_path_factory, "basic")


@pytest.fixture(scope="session")
def full_voicebank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _built(tmp_path_factory, "full")


@pytest.fixture(scope="session")
def basic_engine(basic_voicebank: Path) -> Any:
    from harmonia.engines.diffsinger.engine import DiffsingerEngine

    return DiffsingerEngine(basic_voicebank, device="cpu")


@pytest.fixture(scope="session")
def full_engine(full_voicebank: Path) -> Any:
    from harmonia.engines.diffsinger.engine import DiffsingerEngine

    return DiffsingerEngine(full_voicebank, device="cpu")
