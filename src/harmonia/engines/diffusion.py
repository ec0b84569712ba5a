"""What the diffusers-based engines share (ACE-Step, Stable Audio): checking and loading a pipeline
checkpoint, device and dtype, batching compatible requests into one pipeline call, progress and
cancel between diffusion steps, and turning the pipeline's waveforms into WAV/FLAC artifacts.

A family subclasses `DiffusionEngine` and supplies what is its own: the pipeline class, its input
model, the checks that need the loaded checkpoint (`prepare`), which requests may share a call
(`group_key`) and the call itself (`call`). All file and hub access is in `check_pipeline_ref` and
`load_pipeline`; the engine itself only sees a loaded pipeline.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import logging
import re
import secrets
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, Field, StringConstraints, ValidationError

from harmonia.audio import encode as audio_io
from harmonia.audio.resample import resample
from harmonia.config import DiffusionSettings
from harmonia.engines.base import ArtifactData, EngineResult, RunContext
from harmonia.engines.batcher import Batcher, BatchItem
from harmonia.errors import EngineError, EngineUnavailable, InvalidInput, JobStopped

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 2000


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


#: the request fields both families have: a prompt (stripped, not blank), a seed, an output format
Prompt = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS), AfterValidator(_not_blank)
]
Seed = Annotated[int | None, Field(ge=0, le=2**32 - 1, description="same seed, same audio; unset = random")]
OutputFormat = Literal["wav", "flac"]

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the hub spells repository ids
#: share of a request's progress the diffusion steps report; decoding and encoding take the rest
STEPS_SHARE = 0.95


# --- checkpoints -------------------------------------------------------------------------------------


def check_pipeline_ref(ref: str, pipeline_class: str, family: str) -> str:
    """Cheap check before anything loads: 'local' for a diffusers folder of `pipeline_class`,
    'hub' for a hub id. Raises EngineUnavailable with one line naming the path otherwise."""
    path = Path(ref).expanduser()
    if path.exists():
        index = path / "model_index.json"
        if not path.is_dir() or not index.is_file():
            raise EngineUnavailable(
                f"model path {ref} is not a diffusers {family} checkpoint (no model_index.json)"
            )
        try:
            found = json.loads(index.read_text()).get("_class_name")
        except (OSError, ValueError) as exc:
            raise EngineUnavailable(f"model path {ref}: unreadable model_index.json ({exc})") from exc
        if found != pipeline_class:
            raise EngineUnavailable(
                f"model path {ref} is a {found!r} checkpoint, not {family} ({pipeline_class})"
            )
        return "local"
    if HUB_ID.match(ref):
        return "hub"
    raise EngineUnavailable(f"model path {ref} does not exist")


@dataclass
class LoadedPipeline:
    pipe: Any  # a diffusers DiffusionPipeline
    device: Any
    dtype: Any


def load_pipeline(ref: str, pipeline_class: str, family: str, *, device: str, dtype: str) -> LoadedPipeline:
    """Load `pipeline_class` from a local folder or hub id onto the device, in the dtype."""
    from harmonia.engines.checkpoints import resolve_device, resolve_dtype

    check_pipeline_ref(ref, pipeline_class, family)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    require_extra(family)
    import diffusers
    import transformers

    # loading bars on stderr are noise in a service's log (the log line below says what loaded)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    try:
        pipe = getattr(diffusers, pipeline_class).from_pretrained(ref, dtype=dt)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineUnavailable(f"cannot load {family} from {ref}: {first}") from exc
    pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded %s %s on %s (%s)", family, ref, dev, dt)
    return LoadedPipeline(pipe=pipe, device=dev, dtype=dt)


# --- one request, one step ---------------------------------------------------------------------------


@dataclass
class Request:
    """One request of a batch while its pipeline call runs."""

    item: BatchItem
    payload: Any
    seed: int
    frames: int  # output samples asked for
    data: dict[str, Any] = field(default_factory=dict)  # what `prepare` worked out (decoded audio, ...)
    error: BaseException | None = None


class AllStopped(Exception):
    """Raised from the step callback when every request of a call was canceled: the call stops."""


class StepReporter:
    """The pipeline's per-step callback: a progress report (and so a cancel point) for every request
    of the call after each diffusion step. A stopped request keeps riding along (the batch shares one
    tensor) and gets its JobStopped; when none is left the call is stopped between two steps."""

    def __init__(self, requests: Sequence[Request], steps: int) -> None:
        self.requests = list(requests)
        self.steps = max(1, steps)
        self.done = 0

    def __call__(self, step: int, *_: Any) -> None:
        self.done = step + 1
        message = f"step {self.done}/{self.steps}"
        for r in self.requests:
            if r.error is not None:
                continue
            try:
                r.item.ctx.progress(STEPS_SHARE * self.done / self.steps, message)
            except JobStopped as exc:
                r.error = exc
        if all(r.error is not None for r in self.requests):
            raise AllStopped

    def on_step_end(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        """The `callback_on_step_end` form (newer pipelines): same report, tensors left as they are."""
        self(step)
        return {}


# --- the engine --------------------------------------------------------------------------------------


class DiffusionEngine(ABC):
    """A diffusers pipeline behind a `Batcher`: concurrent requests that can share a call (same
    `group_key`) run as one batched call, each with its own seeded generator."""

    name: ClassVar[str]
    input_model: ClassVar[type[BaseModel]]
    pipeline_class: ClassVar[str]
    family: ClassVar[str]  # what users call it, in messages

    def __init__(
        self, settings: DiffusionSettings, *, model: str | None = None, loaded: LoadedPipeline | None = None
    ) -> None:
        """`loaded`: a pipeline already in memory (benchmarks of architectures built from configs);
        otherwise `load()` reads `model` (default: the settings' checkpoint)."""
        self.settings = settings
        self.model_ref = model or settings.model
        self._loaded: LoadedPipeline | None = loaded
        self._load_lock = threading.Lock()
        self._load_error: EngineUnavailable | None = None
        self._batch_ids = itertools.count(1)
        self._counters = {"batches": 0, "requests": 0, "pipeline_calls": 0, "steps": 0, "audio_seconds": 0.0}
        self._last = {"batch_size": 0, "steps_per_s": 0.0, "realtime_factor": 0.0}
        self._batcher: Batcher[Any, EngineResult] = Batcher(
            self._run_batch,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            split_on=oom_errors(),
            name=f"{self.name}-batcher",
        )

    # --- what a family supplies ------------------------------------------------------------------

    def prepare(self, r: Request) -> None:  # noqa: B027 - optional hook: most families check nothing more
        """Checks that need the loaded checkpoint (raise InvalidInput naming the field); may fill
        `r.data` and `r.frames`."""

    @abstractmethod
    def group_key(self, r: Request) -> Hashable:
        """Requests with equal keys run as one pipeline call."""

    @abstractmethod
    def call(self, requests: Sequence[Request], generators: list[Any], reporter: StepReporter) -> Any:
        """Run the pipeline for `requests` (one group); return waveforms `(batch, channels, samples)`."""

    @abstractmethod
    def steps_of(self, payload: Any) -> int:
        """The number of diffusion steps a request runs."""

    def describe(self) -> dict[str, Any]:
        """Family facts for `info()` once loaded (variant, limits)."""
        return {}

    def duration_is_asked(self, payload: Any) -> bool:
        """Whether `duration_s` is what the request gets (checked before queueing), or is worked
        out by `prepare` (e.g. from a given clip) and checked there."""
        return True

    # --- lifecycle -------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the pipeline (idempotent, thread-safe). Raises EngineUnavailable on failure."""
        with self._load_lock:
            if self._loaded is not None:
                return
            if self._load_error is not None:
                raise self._load_error
            try:
                self._loaded = load_pipeline(
                    self.model_ref, self.pipeline_class, self.family,
                    device=self.settings.device, dtype=self.settings.dtype,
                )  # fmt: skip
            except EngineUnavailable as exc:
                self._load_error = exc
                raise

    @property
    def ready(self) -> bool:
        return self._loaded is not None

    @property
    def pipe(self) -> Any:
        if self._loaded is None:
            raise EngineUnavailable(f"{self.family} is not loaded")
        return self._loaded.pipe

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.vae.config.sampling_rate)

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
            "max_steps": self.settings.max_steps,
        }
        if self._loaded is not None:
            out.update(
                device=str(self._loaded.device),
                dtype=str(self._loaded.dtype).removeprefix("torch."),
                sample_rate=self.sample_rate,
                channels=int(self.pipe.vae.config.audio_channels),
                **self.describe(),
            )
        return out

    def stats(self) -> dict[str, float]:
        """Counters for /metrics: batches, requests, pipeline calls, diffusion steps, audio seconds."""
        return {**self._counters, **{f"last_{k}": v for k, v in self._last.items()}}

    # --- requests --------------------------------------------------------------------------------

    def run(self, payload: BaseModel | dict[str, Any], ctx: RunContext) -> EngineResult:
        p: Any
        try:
            p = payload if isinstance(payload, self.input_model) else self.input_model.model_validate(payload)
        except ValidationError as exc:  # a dict from a queue message: answer like the HTTP edge does
            err = exc.errors()[0]
            fld = ".".join(str(x) for x in err.get("loc", ())) or None
            raise InvalidInput(f"{fld}: {err.get('msg', 'invalid')}", fld) from exc
        if self.duration_is_asked(p) and float(p.duration_s) > self.settings.max_duration_s:
            raise InvalidInput(
                f"duration_s must be at most {self.settings.max_duration_s:g} on this server", "duration_s"
            )
        if self.steps_of(p) > self.settings.max_steps:
            raise InvalidInput(f"steps must be at most {self.settings.max_steps} on this server", "steps")
        self.load()
        return self._batcher.submit(p, ctx)

    def _run_batch(self, items: Sequence[BatchItem]) -> list[EngineResult | BaseException]:
        t0 = time.monotonic()
        batch_id = next(self._batch_ids)
        requests = []
        for item in items:
            p = item.payload
            seed = p.seed if p.seed is not None else secrets.randbits(32)
            r = Request(item=item, payload=p, seed=seed, frames=round(float(p.duration_s) * self.sample_rate))
            try:
                self.prepare(r)
            except InvalidInput as exc:
                r.error = exc
            requests.append(r)
        groups: dict[Hashable, list[Request]] = {}
        for r in requests:
            if r.error is None:
                groups.setdefault(self.group_key(r), []).append(r)
        results: dict[int, EngineResult] = {}
        for group in groups.values():
            results.update(self._run_group(group, batch_id, len(items)))
        self._counters["batches"] += 1
        self._counters["requests"] += len(items)
        self._last["batch_size"] = len(items)
        log.debug(
            "%s batch %d: %d requests in %.2f s", self.name, batch_id, len(items), time.monotonic() - t0
        )
        return [r.error if r.error is not None else results[id(r)] for r in requests]

    def _run_group(self, group: list[Request], batch_id: int, batch_size: int) -> dict[int, EngineResult]:
        import torch

        gen_device = "cpu" if self._loaded is None else self._loaded.device
        generators = [torch.Generator(device=gen_device).manual_seed(r.seed) for r in group]
        steps = self.steps_of(group[0].payload)
        reporter = StepReporter(group, steps)
        t0 = time.monotonic()
        try:
            with warnings.catch_warnings():
                # torchsde's Brownian interval warns about float rounding at the ends of its range
                warnings.filterwarnings("ignore", module="torchsde")
                audio = self.call(group, generators, reporter)
        except AllStopped:
            return {}
        except oom_errors():
            raise  # the batcher halves the batch and tries again
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            for r in group:
                if r.error is None:
                    r.error = EngineError(f"{self.family} failed: {message}")
            return {}
        wall = max(time.monotonic() - t0, 1e-9)
        audio = audio.float().cpu().numpy() if hasattr(audio, "cpu") else np.asarray(audio, dtype=np.float32)
        total_audio = sum(r.frames for r in group) / self.sample_rate
        self._counters["pipeline_calls"] += 1
        self._counters["steps"] += reporter.done
        self._counters["audio_seconds"] += total_audio
        self._last.update(steps_per_s=reporter.done / wall, realtime_factor=total_audio / wall)
        out: dict[int, EngineResult] = {}
        for row, r in enumerate(group):
            if r.error is not None:
                continue
            try:
                out[id(r)] = self._finish(
                    r, audio[row], batch_id, batch_size, len(group), reporter.done, wall
                )
            except ValueError as exc:
                r.error = EngineError(f"could not encode audio: {exc}")
        return out

    def _finish(
        self,
        r: Request,
        wave: np.ndarray,
        batch_id: int,
        batch_size: int,
        call_size: int,
        steps: int,
        wall: float,
    ) -> EngineResult:
        frames = fit_frames(audio_io.as_frames(wave), r.frames)
        fmt = r.payload.format
        data = audio_io.encode(frames, self.sample_rate, fmt)
        seconds = frames.shape[0] / self.sample_rate
        output = {
            "model": self.model_ref,
            "sample_rate": self.sample_rate,
            "channels": int(frames.shape[1]),
            "duration_s": round(seconds, 4),
            "seed": r.seed,
            "steps": steps,
            "batch_id": batch_id,
            "batch_size": batch_size,
            "call_size": call_size,
            "steps_per_s": round(steps / wall, 3),
            "realtime_factor": round(seconds / wall, 4),
            "batch_realtime_factor": round(call_size * seconds / wall, 4),
            **r.data.get("output", {}),
        }
        return EngineResult(
            artifacts=[ArtifactData(f"audio.{fmt}", data, audio_io.CONTENT_TYPES[fmt])], output=output
        )

    # --- helpers for families --------------------------------------------------------------------

    def decode_audio(self, b64: str, field_name: str) -> np.ndarray:
        """A base64 WAV/FLAC field -> float32 `(frames, channels)` at the pipeline's rate and channels."""
        try:
            decoded = audio_io.decode(base64.b64decode(b64, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"not base64 of a WAV/FLAC file: {exc}", field_name) from exc
        if decoded.audio.shape[0] == 0:
            raise InvalidInput("the audio is empty", field_name)
        audio = resample(decoded.audio, decoded.sample_rate, self.sample_rate)
        channels = int(self.pipe.vae.config.audio_channels)
        if audio.shape[1] != channels:
            audio = np.repeat(audio.mean(axis=1, keepdims=True), channels, axis=1)
        return audio


def fit_frames(audio: np.ndarray, frames: int) -> np.ndarray:
    """Cut or zero-pad `(n, channels)` audio to exactly `frames` samples (the requested duration)."""
    if audio.shape[0] >= frames:
        return audio[:frames]
    return np.concatenate([audio, np.zeros((frames - audio.shape[0], audio.shape[1]), audio.dtype)])


def oom_errors() -> tuple[type[BaseException], ...]:
    """The exception torch raises when the accelerator runs out of memory (split and retry on it)."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom,) if oom is not None else ()


def require_extra(family: str) -> None:
    """Fail early, in one line, when the [diffusers] extra is missing."""
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailable(f"{family} needs the [diffusers] extra (diffusers, torch): {exc}") from exc
