"""MusicGen engine: text (and optionally an audio prompt) to music, through Hugging Face transformers.

The engine loads `MusicgenForConditionalGeneration` once (local directory or hub id, see
`loader`), batches concurrent requests with a `Batcher`, runs its own decode loop
(`decode.FastDecoder`: static KV cache, tensor-op delay pattern and CFG, CUDA graphs on
CUDA) and turns codes into audio with the model's EnCodec. Requests longer than one window
(30 s by default) are generated as windowed continuations: each new window is conditioned on the
last `overlap_s` of codes already generated. With `stream: true` finished frames are decoded in
chunks while generation goes on and published as `audio_chunk` events on the request's context.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
import secrets
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ValidationError

from harmonia.audio import encode as audio_io
from harmonia.config import MusicgenSettings
from harmonia.engines.base import ArtifactData, EngineResult, RunContext
from harmonia.engines.batcher import Batcher, BatchItem
from harmonia.engines.musicgen.input import MusicgenInput
from harmonia.engines.musicgen.streaming import AudioStreamer
from harmonia.errors import EngineError, EngineUnavailable, InvalidInput, JobStopped

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MusicgenOptions:
    """Engine knobs beyond `MusicgenSettings`; read from settings fields of the same name if present."""

    # auto: int8 on CPU, none on CUDA. int8: CPU dynamic quantization of the decoder's products,
    # several times faster than float32 there but not the float model's tokens.
    quantize: Literal["auto", "none", "int8"] = "auto"
    cuda_graphs: bool = True
    window_s: float = 30.0  # longest single decode; MusicGen was trained on 30 s
    overlap_s: float = 10.0  # context carried into each continuation window
    stream_chunk_s: float = 1.0
    tick_every: int = 10  # decode steps between progress / cancel / streaming checks

    @classmethod
    def from_settings(cls, settings: Any) -> MusicgenOptions:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)})


@dataclass
class _Job:
    """One request inside a batch while it is being generated."""

    item: BatchItem
    payload: MusicgenInput
    seed: int
    frames: int  # new frames asked for
    history: Any  # (K, n) codes so far, prompt included
    prompt_frames: int
    error: BaseException | None = None
    stream: AudioStreamer | None = None
    windows: int = 0

    @property
    def remaining(self) -> int:
        return self.prompt_frames + self.frames - int(self.history.shape[-1])


class MusicgenEngine:
    """Text-to-music with MusicGen. `run` may be called from many threads; calls are batched."""

    name: ClassVar[str] = "musicgen"
    input_model: ClassVar[type[BaseModel]] = MusicgenInput

    def __init__(
        self,
        settings: MusicgenSettings,
        *,
        model: str | None = None,
        options: MusicgenOptions | None = None,
        decoder_factory: Any = None,
    ) -> None:
        """`decoder_factory(model, device=, cuda_graphs=, quantize=)` builds the decode loop for the
        loaded model (`decode.FastDecoder` by default; tests wrap it to make a device fail)."""
        self.settings = settings
        self._decoder_factory = decoder_factory
        self.model_ref = model or settings.model
        self.options = options or MusicgenOptions.from_settings(settings)
        self._loaded: Any = None
        self._decoder: Any = None
        self._load_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._load_error: EngineUnavailable | None = None
        self._batch_ids = itertools.count(1)
        self._counters = {"batches": 0, "requests": 0, "decode_steps": 0, "audio_seconds": 0.0}
        self._last = {"batch_size": 0, "steps_per_s": 0.0, "realtime_factor": 0.0}
        self._batcher: Batcher[MusicgenInput, EngineResult] = Batcher(
            self._run_batch,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            split_on=_oom_errors(),
            name="musicgen-batcher",
        )

    # ------------------------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Load the model (idempotent, thread-safe). Raises EngineUnavailable on failure."""
        with self._load_lock:
            if self._loaded is not None:
                return
            if self._load_error is not None:
                raise self._load_error
            from harmonia.engines.musicgen.decode import FastDecoder
            from harmonia.engines.musicgen.loader import load_musicgen

            try:
                loaded = load_musicgen(
                    self.model_ref,
                    device=self.settings.device,
                    dtype=self.settings.dtype,
                    quantize=self.options.quantize,
                )
            except EngineUnavailable as exc:
                self._load_error = exc
                raise
            self._decoder = (self._decoder_factory or FastDecoder)(
                loaded.model,
                device=loaded.device,
                cuda_graphs=self.options.cuda_graphs,
                quantize=loaded.quantize,
            )
            self._loaded = loaded

    @property
    def ready(self) -> bool:
        return self._loaded is not None

    def close(self) -> None:
        self._batcher.close()

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "engine": self.name,
            "model": self.model_ref,
            "loaded": self.ready,
            "max_batch_size": self.settings.max_batch_size,
            "max_wait_ms": self.settings.max_wait_ms,
            "max_duration_s": self.settings.max_duration_s,
            "quantize": self._loaded.quantize if self._loaded is not None else self.options.quantize,
            "window_s": self.options.window_s,
            "overlap_s": self.options.overlap_s,
        }
        if self._loaded is not None:
            m = self._loaded.model
            out.update(
                device=str(self._loaded.device),
                dtype=str(self._loaded.dtype).removeprefix("torch."),
                sample_rate=self.sample_rate,
                frame_rate=self.frame_rate,
                channels=int(m.config.decoder.audio_channels),
                num_codebooks=int(m.config.decoder.num_codebooks),
                cuda_graphs=bool(self._decoder.cuda_graphs),
            )
        return out

    def stats(self) -> dict[str, float]:
        """Counters for /metrics: batches, requests, decode steps (shared forward passes), audio s."""
        return {**self._counters, **{f"last_{k}": v for k, v in self._last.items()}}

    @property
    def sample_rate(self) -> int:
        return int(self._loaded.model.config.audio_encoder.sampling_rate)

    @property
    def frame_rate(self) -> int:
        return int(self._loaded.model.config.audio_encoder.frame_rate)

    # ------------------------------------------------------------------------------ requests
    def run(self, payload: BaseModel, ctx: RunContext) -> EngineResult:
        try:
            p = payload if isinstance(payload, MusicgenInput) else MusicgenInput.model_validate(payload)
        except ValidationError as exc:  # a dict from a queue message: answer like the HTTP edge does
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err.get("loc", ())) or None
            raise InvalidInput(f"{field}: {err.get('msg', 'invalid')}", field) from exc
        if p.duration_s > self.settings.max_duration_s:
            raise InvalidInput(
                f"duration_s must be at most {self.settings.max_duration_s:g} on this server", "duration_s"
            )
        self.load()
        return self._batcher.submit(p, ctx)

    def generate_codes(self, payloads: list[MusicgenInput]) -> list[Any]:
        """Generate and return the EnCodec codes `(K, frames)` of each payload, no audio (tools, tests)."""
        from harmonia.engines.base import LocalContext

        self.load()
        jobs = [self._prepare(BatchItem(p, LocalContext())) for p in payloads]
        with self._model_lock:
            self._generate([j for j in jobs if j.error is None])
        for j in jobs:
            if j.error is not None:
                raise j.error
        return [j.history for j in jobs]

    def _run_batch(self, items: list[BatchItem]) -> list[EngineResult | BaseException]:
        t0 = time.monotonic()
        jobs = [self._prepare(item) for item in items]
        live = [j for j in jobs if j.error is None]
        with self._model_lock:
            steps0 = self._decoder.forward_passes
            self._generate(live)
            steps = self._decoder.forward_passes - steps0
            decode_wall = max(time.monotonic() - t0, 1e-9)
            results: list[EngineResult | BaseException] = []
            batch_id = next(self._batch_ids)
            total_audio = sum(j.frames / self.frame_rate for j in live if j.error is None)
            for j in jobs:
                if j.error is not None:
                    results.append(j.error)
                    continue
                try:
                    results.append(self._finish(j, batch_id, len(items), steps, decode_wall, total_audio))
                except (ValueError, RuntimeError) as exc:
                    results.append(EngineError(f"could not encode audio: {exc}"))
        wall = max(time.monotonic() - t0, 1e-9)
        self._counters["batches"] += 1
        self._counters["requests"] += len(items)
        self._counters["decode_steps"] += steps
        self._counters["audio_seconds"] += total_audio
        self._last.update(
            batch_size=len(items), steps_per_s=steps / decode_wall, realtime_factor=total_audio / wall
        )
        return results

    # ------------------------------------------------------------------------------ internals
    def _prepare(self, item: BatchItem) -> _Job:
        p: MusicgenInput = item.payload
        seed = p.seed if p.seed is not None else secrets.randbits(32)
        frames = max(1, round(p.duration_s * self.frame_rate))
        job = _Job(item=item, payload=p, seed=seed, frames=frames, history=None, prompt_frames=0)
        try:
            job.history = self._encode_prompt(p.audio_prompt)
        except InvalidInput as exc:
            job.error = exc
            return job
        job.prompt_frames = int(job.history.shape[-1])
        if p.stream:
            job.stream = AudioStreamer(self, item.ctx, self.options.stream_chunk_s)
        return job

    def _window_frames(self) -> int:
        m = self._loaded.model.config.decoder
        kc = self._decoder.kc
        return max(2, min(round(self.options.window_s * self.frame_rate), m.max_position_embeddings - kc - 1))

    def _encode_prompt(self, b64: str | None) -> Any:
        import torch

        K = self._decoder.K
        if b64 is None:
            return torch.zeros((K, 0), dtype=torch.long)
        try:
            decoded = audio_io.decode(base64.b64decode(b64, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"not base64 of a WAV/FLAC file: {exc}", "audio_prompt") from exc
        audio = _resample(decoded.audio, decoded.sample_rate, self.sample_rate)
        # Leave room in the first window for at least a second (half a short window) of new audio.
        window = self._window_frames()
        max_s = (window - max(1, min(self.frame_rate, window // 2))) / self.frame_rate
        if audio.shape[0] < self.sample_rate // self.frame_rate:
            raise InvalidInput("audio prompt is too short (under one frame)", "audio_prompt")
        if audio.shape[0] / self.sample_rate > max_s:
            raise InvalidInput(f"audio prompt must be at most {max_s:g} s", "audio_prompt")
        ae = self._loaded.model.audio_encoder
        dev = self._loaded.device
        chans = [audio.mean(axis=1)] if self._decoder.channels == 1 else _two_channels(audio)
        codes = []
        with torch.inference_mode(), self._model_lock:
            for ch in chans:
                x = torch.from_numpy(np.ascontiguousarray(ch, dtype=np.float32)).to(dev).view(1, 1, -1)
                codes.append(ae.encode(x).audio_codes[0, 0])  # (K per channel, frames)
        if len(codes) == 1:
            return codes[0].cpu()
        return torch.stack(codes, dim=1).reshape(K, -1).cpu()  # interleave left/right codebooks

    def _conditioning(self, texts: list[str]) -> Any:
        import torch

        from harmonia.engines.musicgen.decode import Conditioning

        m, dev = self._loaded.model, self._loaded.device
        enc = self._loaded.processor(text=texts, padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
        with torch.inference_mode():
            h = m.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            if getattr(m, "enc_to_dec_proj", None) is not None:
                h = m.enc_to_dec_proj(h)
            h = (h * mask[..., None]).to(self._loaded.dtype)
        return Conditioning(hidden=h, mask=mask)

    def _generate(self, jobs: list[_Job]) -> None:
        """Run decode rounds until every job has its frames (or failed). Fills `job.history`."""
        import torch

        from harmonia.engines.musicgen.decode import Conditioning, RowSpec

        if not jobs:
            return
        cond_all = self._conditioning([j.payload.text for j in jobs])
        window = self._window_frames()
        overlap = min(round(self.options.overlap_s * self.frame_rate), window // 2)
        for rnd in itertools.count():
            todo = [i for i, j in enumerate(jobs) if j.error is None and j.remaining > 0]
            if not todo:
                return
            rows, ctxlen = [], []
            for i in todo:
                j = jobs[i]
                have = int(j.history.shape[-1])
                ctx_frames = have if rnd == 0 else min(overlap, have)
                prompt = j.history[:, have - ctx_frames :] if ctx_frames else None
                ctxlen.append(ctx_frames)
                j.windows += 1
                p = j.payload
                rows.append(
                    RowSpec(
                        new_frames=min(j.remaining, window - ctx_frames), prompt=prompt,
                        guidance_scale=p.guidance_scale, temperature=p.temperature, top_k=p.top_k,
                        top_p=p.top_p, seed=j.seed, salt=rnd,
                    )
                )  # fmt: skip
            idx = torch.tensor(todo, device=cond_all.mask.device)
            cond = Conditioning(cond_all.hidden.index_select(0, idx), cond_all.mask.index_select(0, idx))

            def tick(pos: int, active: list[int], read: Any, _todo=todo, _ctx=ctxlen) -> set[int]:
                drop = set()
                for r in active:
                    j = jobs[_todo[r]]
                    base = int(j.history.shape[-1]) - _ctx[r]
                    done = base + max(0, pos - self._decoder.kc + 1)
                    try:
                        j.item.ctx.progress(
                            min(done, j.prompt_frames + j.frames) / (j.prompt_frames + j.frames)
                        )
                        if j.stream is not None:
                            j.stream.feed(lambda r=r, j=j, b=base: _cat(j.history[:, :b], read(r)))
                    except JobStopped as exc:
                        j.error = exc
                        drop.add(r)
                return drop

            out = self._decoder.decode(cond, rows, on_tick=tick, tick_every=self.options.tick_every)
            for r, i in enumerate(todo):
                j = jobs[i]
                if out[r] is not None and j.error is None:
                    have = int(j.history.shape[-1])
                    j.history = torch.cat([j.history[:, : have - ctxlen[r]], out[r]], dim=-1)

    def _finish(self, j: _Job, batch_id: int, batch_size: int, steps: int, wall: float, total_audio: float):
        audio = self.decode_audio(j.history)
        if j.stream is not None:
            j.stream.flush(audio)
        data = audio_io.encode(audio, self.sample_rate, j.payload.format)
        output = {
            "model": self.model_ref,
            "sample_rate": self.sample_rate,
            "channels": int(audio.shape[1]),
            "duration_s": round(audio.shape[0] / self.sample_rate, 4),
            "generated_s": round(j.frames / self.frame_rate, 4),
            "prompt_s": round(j.prompt_frames / self.frame_rate, 4),
            "seed": j.seed,
            "windows": j.windows,
            "batch_id": batch_id,
            "batch_size": batch_size,
            "decode_steps": steps,
            "steps_per_s": round(steps / wall, 2),
            "realtime_factor": round(j.frames / self.frame_rate / wall, 4),
            "batch_realtime_factor": round(total_audio / wall, 4),
        }
        name = f"audio.{j.payload.format}"
        return EngineResult(
            artifacts=[ArtifactData(name, data, audio_io.CONTENT_TYPES[j.payload.format])], output=output
        )

    def decode_audio(self, codes: Any) -> np.ndarray:
        """EnCodec codes `(K, frames)` -> float32 audio `(samples, channels)`."""
        import torch

        ae = self._loaded.model.audio_encoder
        c = codes.to(self._loaded.device)[None, None]
        with torch.inference_mode():
            if self._decoder.channels == 1:
                wav = ae.decode(c, [None]).audio_values[0]
            else:
                left = ae.decode(c[:, :, 0::2], [None]).audio_values[0]
                right = ae.decode(c[:, :, 1::2], [None]).audio_values[0]
                wav = torch.cat([left, right], dim=0)
        return wav.float().cpu().numpy().T.copy()


def _cat(a: Any, b: Any) -> Any:
    import torch

    return torch.cat([a, b], dim=-1)


def _two_channels(audio: np.ndarray) -> list[np.ndarray]:
    if audio.shape[1] == 1:
        return [audio[:, 0], audio[:, 0]]
    return [audio[:, 0], audio[:, 1]]


def _resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling by FFT (as scipy.signal.resample does); `(frames, channels)`."""
    if sr_in == sr_out or audio.shape[0] == 0:
        return audio
    n_out = round(audio.shape[0] * sr_out / sr_in)
    spec = np.fft.rfft(audio, axis=0)
    keep = min(spec.shape[0], n_out // 2 + 1)
    out_spec = np.zeros((n_out // 2 + 1, audio.shape[1]), dtype=spec.dtype)
    out_spec[:keep] = spec[:keep]
    return (np.fft.irfft(out_spec, n=n_out, axis=0) * (n_out / audio.shape[0])).astype(np.float32)


def _oom_errors() -> tuple[type[BaseException], ...]:
    """The exception torch raises when the accelerator runs out of memory (split and retry on it)."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom,) if oom is not None else ()


def build_engine(
    settings: Any, model: str | None = None, options: MusicgenOptions | None = None
) -> MusicgenEngine:
    """A MusicGen engine from the process settings (`settings.musicgen`); `model` overrides the ref."""
    try:
        import torch  # noqa: F401  (fail early with a clear line when the extra is missing)
        import transformers  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailable(f"MusicGen needs the [musicgen] extra (torch, transformers): {exc}") from exc
    return MusicgenEngine(settings.musicgen, model=model, options=options)
