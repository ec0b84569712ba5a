"""The `diffsinger` engine: openvpi DiffSinger ONNX voicebanks (the OpenUtau format) on onnxruntime.

Pipeline per phrase: lyrics -> phonemes (voicebank dictionary) -> timing (notes, refined by the
`dsdur` duration model when present) -> f0 curve (glides, vibrato) -> variance curves (`dsvariance`
model, when the acoustic model needs energy/breathiness/voicing/tension) -> acoustic model (mel)
-> NSF-HiFiGAN vocoder (waveform). Phrases are rendered one by one (cancel is checked between them)
and placed on one timeline. Tensor names and shapes follow docs/diffsinger.md.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from harmonia.audio.encode import encode_wav
from harmonia.engines.base import ArtifactData, EngineResult, RunContext
from harmonia.engines.diffsinger.input import SingingRequest, midi_to_score, notes_to_score
from harmonia.engines.diffsinger.phrases import (
    Phrase,
    ds_to_phrases,
    frame_durations,
    layout_phrase,
    split_phrases,
)
from harmonia.engines.diffsinger.pitch import (
    hz_to_midi,
    linear_resize,
    midi_curve,
    midi_to_hz,
    resample_curve,
)
from harmonia.engines.diffsinger.voicebank import AuxModels, Voicebank, load_voicebank
from harmonia.errors import EngineError, EngineUnavailable, InvalidInput

FADE_S = 0.005  # phrase edges are faded so that overlapping paddings never click


def select_providers(device: str) -> list[str]:
    """onnxruntime execution providers for `auto` / `cpu` / `cuda`."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EngineUnavailable("diffsinger needs onnxruntime: install the [diffsinger] extra") from exc
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise EngineUnavailable(f"device 'cuda' asked for, but onnxruntime only has {available}")
    return ["CPUExecutionProvider"]


def _i64(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)[None]


def _scalar(model_inputs: dict[str, tuple[str, list[Any]]], name: str, value: float) -> np.ndarray:
    """A scalar input, shaped and typed as the graph declares it (exports differ: [] or [1], int or float)."""
    onnx_type, shape = model_inputs[name]
    dtype = np.float32 if "float" in onnx_type else np.int64
    arr = np.asarray(value, dtype=dtype)
    return arr.reshape(1) if len(shape) == 1 else arr


def _word_groups(symbols: list[str], durations: list[int], is_vowel: Any) -> tuple[list[int], list[int]]:
    """DiffSinger words start at vowels (SP/AP included): `word_div` phones and `word_dur` frames each."""
    starts = [0, *(i for i, s in enumerate(symbols) if i > 0 and is_vowel(s))]
    spans = list(zip(starts, [*starts[1:], len(symbols)], strict=True))
    return [e - s for s, e in spans], [sum(durations[s:e]) for s, e in spans]


class DiffsingerEngine:
    name: ClassVar[str] = "diffsinger"
    input_model: ClassVar[type[BaseModel]] = SingingRequest

    def __init__(self, voicebank: Path, device: str = "auto", *, lazy: bool = False) -> None:
        """Load the voicebank now, or with `lazy=True` on `load()` (the model service calls it in a
        background thread so that /healthz answers while a large voicebank loads)."""
        self.voicebank_path = Path(voicebank)
        self.device = device
        self._voicebank: Voicebank | None = None
        self._load_lock = threading.Lock()
        if not lazy:
            self.load()

    def load(self) -> None:
        """Load and check the voicebank; `EngineUnavailable` names the missing or malformed file."""
        with self._load_lock:
            if self._voicebank is None:
                self._voicebank = load_voicebank(self.voicebank_path, select_providers(self.device))

    @property
    def voicebank(self) -> Voicebank:
        if self._voicebank is None:
            raise EngineUnavailable(f"voicebank {self.voicebank_path} is not loaded yet")
        return self._voicebank

    @property
    def sample_rate(self) -> int:
        return self.voicebank.config.sample_rate

    # ------------------------------------------------------------------ public
    def info(self) -> dict[str, Any]:
        if self._voicebank is None:
            return {
                "engine": self.name,
                "path": str(self.voicebank_path),
                "device": self.device,
                "loaded": False,
            }
        vb = self._voicebank
        return {
            "loaded": True,
            "engine": self.name,
            "voicebank": vb.name,
            "path": str(vb.root),
            "device": self.device,
            "providers": vb.providers,
            "sample_rate": self.sample_rate,
            "hop_size": vb.config.hop_size,
            "phonemes": len(vb.phonemes),
            "dictionary_entries": len(vb.dictionary),
            "speakers": sorted(vb.speakers),
            "duration_model": vb.duration is not None,
            "variance_model": vb.variance is not None,
            "variances": vb.needed_variances,
        }

    def run(self, payload: BaseModel, ctx: RunContext) -> EngineResult:
        req = payload if isinstance(payload, SingingRequest) else SingingRequest.model_validate(payload)
        vb = self.voicebank
        speaker = self._speaker(req)
        phrases = self._phrases(req, speaker)
        ctx.progress(0.05, f"{len(phrases)} phrase(s)")
        rendered = []
        meta_phrases = []
        f0_all = []
        for i, phrase in enumerate(phrases):
            ctx.check()
            audio, durations, f0 = self._render(phrase, req, speaker)
            rendered.append((phrase.start, audio))
            f0_all.append(f0)
            meta_phrases.append(
                {
                    "start_s": round(phrase.start, 4),
                    "end_s": round(phrase.end, 4),
                    "phonemes": [p.symbol for p in phrase.phones],
                    "durations_s": [round(d * vb.config.frame_s, 4) for d in durations],
                    "frames": int(sum(durations)),
                }
            )
            ctx.progress(0.05 + 0.9 * (i + 1) / len(phrases), f"phrase {i + 1}/{len(phrases)}")
        origin = min(0.0, min(start for start, _ in rendered))
        end = max(start + len(a) / self.sample_rate for start, a in rendered)
        out = np.zeros(math.ceil((end - origin) * self.sample_rate), dtype=np.float32)
        for start, audio in rendered:
            at = round((start - origin) * self.sample_rate)
            n = min(len(audio), len(out) - at)
            out[at : at + n] += audio[:n]
        f0 = np.concatenate(f0_all)
        wav = encode_wav(out, self.sample_rate)
        ctx.progress(1.0, "done")
        return EngineResult(
            artifacts=[ArtifactData("vocals.wav", wav, "audio/wav")],
            output={
                "engine": self.name,
                "voicebank": vb.name,
                "sample_rate": self.sample_rate,
                "duration_s": round(len(out) / self.sample_rate, 4),
                "time_offset_s": round(-origin, 4),
                "speaker": speaker,
                "phrases": meta_phrases,
                "f0": {
                    "min_hz": round(float(f0.min()), 2),
                    "max_hz": round(float(f0.max()), 2),
                    "mean_hz": round(float(f0.mean()), 2),
                    "median_midi": round(float(np.median(hz_to_midi(f0))), 2),
                },
                "duration_model": vb.duration is not None and req.ds is None,
                "variance_model": bool(vb.needed_variances),
            },
        )

    # ------------------------------------------------------------------ input -> phrases
    def _speaker(self, req: SingingRequest) -> str | None:
        names = sorted(self.voicebank.speakers)
        if req.speaker is None:
            return names[0] if names else None
        if req.speaker not in self.voicebank.speakers:
            raise InvalidInput(
                f"speaker {req.speaker!r} is not in this voicebank (has {names})", field="speaker"
            )
        return req.speaker

    def _phrases(self, req: SingingRequest, speaker: str | None) -> list[Phrase]:
        vb = self.voicebank
        if req.ds is not None:
            return ds_to_phrases(req.ds, vb.phonemes)
        if req.notes is not None:
            score = notes_to_score(req, vb.dictionary, vb.phonemes)
        else:
            score = midi_to_score(req, vb.dictionary, vb.phonemes)
        phrases = []
        for notes in split_phrases(score):
            phrase = layout_phrase(notes, vb.dictionary)
            if vb.duration is not None:
                predicted = self._predict_durations(vb.duration, phrase, speaker)
                phrase = layout_phrase(notes, vb.dictionary, predicted)
            phrases.append(phrase)
        return phrases

    # ------------------------------------------------------------------ models
    def _tokens(self, table: dict[str, int], phrase: Phrase, where: Path) -> list[int]:
        try:
            return [table[p.symbol] for p in phrase.phones]
        except KeyError as exc:
            raise InvalidInput(
                f"phoneme {exc.args[0]!r} is not known to the model in {where}", field="phonemes"
            ) from exc

    def _languages(self, table: dict[str, int], phrase: Phrase) -> np.ndarray:
        return _i64(
            [table.get(p.symbol.split("/", 1)[0], 0) if "/" in p.symbol else 0 for p in phrase.phones]
        )

    def _spk(self, speakers: dict[str, np.ndarray], speaker: str | None, length: int) -> np.ndarray:
        emb = speakers.get(speaker or "") if speaker else None
        if emb is None:
            emb = next(iter(speakers.values()))
        return np.tile(emb[None, None, :], (1, length, 1)).astype(np.float32)

    def _encode(self, aux: AuxModels, phrase: Phrase, durations: list[int]) -> dict[str, np.ndarray]:
        symbols = [p.symbol for p in phrase.phones]
        feeds = {"tokens": _i64(self._tokens(aux.phonemes, phrase, aux.root))}
        ins = aux.linguistic.inputs
        if "word_div" in ins:
            word_div, word_dur = _word_groups(symbols, durations, self.voicebank.dictionary.is_vowel)
            feeds["word_div"], feeds["word_dur"] = _i64(word_div), _i64(word_dur)
        if "ph_dur" in ins:
            feeds["ph_dur"] = _i64(durations)
        if "languages" in ins:
            feeds["languages"] = self._languages(aux.languages, phrase)
        return aux.linguistic.run(feeds)

    def _predict_durations(self, aux: AuxModels, phrase: Phrase, speaker: str | None) -> list[float]:
        assert aux.dur is not None  # guaranteed by the loader for dsdur/
        durations = frame_durations(phrase, aux.config.frame_s)
        enc = self._encode(aux, phrase, durations)
        feeds = {
            "encoder_out": enc["encoder_out"],
            "x_masks": enc["x_masks"],
            "ph_midi": _i64([p.midi for p in phrase.phones]),
        }
        if "word_div" in aux.dur.inputs:
            symbols = [p.symbol for p in phrase.phones]
            word_div, word_dur = _word_groups(symbols, durations, self.voicebank.dictionary.is_vowel)
            feeds["word_div"], feeds["word_dur"] = _i64(word_div), _i64(word_dur)
        if "spk_embed" in aux.dur.inputs:
            feeds["spk_embed"] = self._spk(aux.speakers, speaker, len(phrase.phones))
        pred = np.asarray(aux.dur.run(feeds)["ph_dur_pred"], dtype=np.float64).reshape(-1)
        if pred.size != len(phrase.phones) or not np.all(np.isfinite(pred)):
            raise EngineError(
                f"{aux.dur.path}: ph_dur_pred has shape {pred.shape}, expected {len(phrase.phones)}"
            )
        return list(np.maximum(pred, 0.0) * aux.config.frame_s)

    def _predict_variances(
        self,
        aux: AuxModels,
        phrase: Phrase,
        pitch: np.ndarray,
        n_frames: int,
        req: SingingRequest,
        speaker: str | None,
    ) -> dict[str, np.ndarray]:
        model = aux.variance
        assert model is not None  # guaranteed by the loader for dsvariance/
        durations = frame_durations(phrase, aux.config.frame_s)
        n = sum(durations)
        enc = self._encode(aux, phrase, durations)
        names = [v for v in ("energy", "breathiness", "voicing", "tension") if v in model.inputs]
        feeds: dict[str, np.ndarray] = {
            "encoder_out": enc["encoder_out"],
            "ph_dur": _i64(durations),
            "pitch": linear_resize(pitch, n)[None],
            "retake": np.ones((1, n, len(names)), dtype=bool),
            **{v: np.zeros((1, n), dtype=np.float32) for v in names},
        }
        self._acceleration(model.inputs, feeds, req, aux.config.use_continuous_acceleration, 1.0)
        if "spk_embed" in model.inputs:
            feeds["spk_embed"] = self._spk(aux.speakers, speaker, n)
        out = model.run(feeds)
        return {
            v: linear_resize(np.asarray(out[f"{v}_pred"]).reshape(-1), n_frames)
            for v in self.voicebank.needed_variances
        }

    def _acceleration(
        self,
        ins: dict[str, Any],
        feeds: dict[str, np.ndarray],
        req: SingingRequest,
        continuous: bool,
        max_depth: float,
    ) -> None:
        """Sampling controls as OpenUtau feeds them: `steps` (+ float depth) or `speedup` (+ int depth)."""
        depth = min(req.depth, max_depth)
        if continuous or "steps" in ins:
            if "depth" in ins:
                feeds["depth"] = _scalar(ins, "depth", depth)
            if "steps" in ins:
                feeds["steps"] = _scalar(ins, "steps", req.steps)
            return
        int_depth = round(depth * 1000)
        speedup = max(1, (int_depth if "depth" in ins else 1000) // req.steps)
        if "depth" not in ins:
            while 1000 % speedup and speedup > 1:  # the 1000-step schedule must divide evenly
                speedup -= 1
        else:
            feeds["depth"] = _scalar(ins, "depth", max(int_depth // speedup * speedup, speedup))
        if "speedup" in ins:
            feeds["speedup"] = _scalar(ins, "speedup", speedup)

    def _render(
        self, phrase: Phrase, req: SingingRequest, speaker: str | None
    ) -> tuple[np.ndarray, list[int], np.ndarray]:
        vb = self.voicebank
        cfg = vb.config
        durations = frame_durations(phrase, cfg.frame_s)
        n = sum(durations)
        times = phrase.start + (np.arange(n) + 0.5) * cfg.frame_s
        if phrase.f0 is not None:
            f0 = resample_curve(*phrase.f0, times=times)
            pitch = hz_to_midi(f0)
        else:
            pitch = midi_curve(
                phrase.notes,
                times,
                transition_s=req.transition_s,
                vibrato_depth_cents=req.vibrato.depth_cents,
                vibrato_rate_hz=req.vibrato.rate_hz,
                vibrato_delay_s=req.vibrato.delay_s,
            )
            f0 = midi_to_hz(pitch)
        ins = vb.acoustic.inputs
        feeds: dict[str, np.ndarray] = {
            "tokens": _i64(self._tokens(vb.phonemes, phrase, vb.root)),
            "durations": _i64(durations),
            "f0": f0[None],
        }
        if "languages" in ins:
            feeds["languages"] = self._languages(vb.languages, phrase)
        if "gender" in ins:
            feeds["gender"] = np.full((1, n), req.gender, dtype=np.float32)
        if "velocity" in ins:
            feeds["velocity"] = np.full((1, n), req.velocity, dtype=np.float32)
        if "spk_embed" in ins:
            if not vb.speakers:
                raise EngineUnavailable(
                    f"{vb.acoustic.path}: needs spk_embed but dsconfig.yaml lists no speakers"
                )
            feeds["spk_embed"] = self._spk(vb.speakers, speaker, n)
        if vb.needed_variances and vb.variance is not None:
            for name, curve in self._predict_variances(vb.variance, phrase, pitch, n, req, speaker).items():
                feeds[name] = curve[None]
        self._acceleration(ins, feeds, req, cfg.use_continuous_acceleration, cfg.max_depth_fraction)
        mel = np.asarray(vb.acoustic.run(feeds)["mel"], dtype=np.float32)
        if mel.shape != (1, n, cfg.num_mel_bins):
            raise EngineError(
                f"{vb.acoustic.path}: mel has shape {mel.shape}, expected (1, {n}, {cfg.num_mel_bins})"
            )
        if cfg.mel_base != vb.vocoder_config.mel_base:  # log10 <-> ln mel differ by a factor ln(10)
            mel = mel * np.float32(math.log(10) if cfg.mel_base == "10" else 1 / math.log(10))
        wave = np.asarray(vb.vocoder.run({"mel": mel, "f0": f0[None]})["waveform"], dtype=np.float32)
        if wave.ndim != 2 or wave.shape[0] != 1:
            raise EngineError(f"{vb.vocoder.path}: waveform has shape {wave.shape}, expected (1, samples)")
        audio = np.nan_to_num(wave[0])
        fade = min(int(FADE_S * self.sample_rate), len(audio) // 2)
        if fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            audio[:fade] *= ramp
            audio[-fade:] *= ramp[::-1]
        return audio, durations, f0
