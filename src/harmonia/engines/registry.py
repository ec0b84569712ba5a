"""Model name -> engine factory, queue, input schema and availability.

Input schemas are named as `module:Class` and imported on first use, so the gateway can validate
payloads for light engines without importing torch, and reports a heavy engine whose extra is not
installed as unavailable (with the reason) instead of failing to start.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from harmonia.config import Settings
from harmonia.errors import EngineUnavailable, InvalidInput

if TYPE_CHECKING:
    from harmonia.engines.base import Engine

PROBE_TTL_S = 10.0
Factory = Callable[[Settings, "Registry"], "Engine"]


def _import(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    queue: str
    description: str
    input_model: str  # "module:Class"
    factory: str  # "module:function(settings, registry) -> Engine"
    requires: tuple[str, ...] = ()  # importable modules the engine needs (its extra)
    extra: str | None = None
    license: str | None = None  # of the model's weights, shown by GET /v1/models
    # a cheap check of what the engine would load (configs parse, the files they name exist)
    precheck: Callable[[Settings], str | None] | None = field(default=None, compare=False)
    # "module:function(payload)" run after schema validation at submission: a check the schema cannot
    # express (jen1: the request can be planned); raises InvalidInput naming the field
    check: str | None = None
    # a live check of a dependency (a daemon) for GET /v1/models; cached briefly by the registry
    probe: Callable[[Settings], str | None] | None = field(default=None, compare=False)
    # what an available model's first job will need, while it is not loaded (e.g. a download)
    notice: Callable[[Settings], str | None] | None = field(default=None, compare=False)

    def unavailable_reason(self, settings: Settings) -> str | None:
        if self.service_url(settings):
            return None  # served by a model service; nothing to load here
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            hint = f"; install harmonia[{self.extra}]" if self.extra else ""
            return f"missing Python packages: {', '.join(missing)}{hint}"
        return self.precheck(settings) if self.precheck else None

    def service_url(self, settings: Settings) -> str | None:
        """The model service that serves this model, when one is configured (HARMONIA_<MODEL>_URL;
        a hyphen in the model name is an underscore there: stable-audio -> HARMONIA_STABLE_AUDIO_URL)."""
        url = getattr(settings, f"{self.name.replace('-', '_')}_url", None)
        return url if isinstance(url, str) and url else None

    def schema(self) -> type[BaseModel]:
        model: type[BaseModel] = _import(self.input_model)
        return model


def _diffsinger_precheck(settings: Settings) -> str | None:
    from harmonia.engines.diffsinger.voicebank import check_voicebank

    if settings.diffsinger.voicebank is None:
        return "no voicebank configured: set HARMONIA_DIFFSINGER__VOICEBANK to a DiffSinger voicebank folder"
    if not settings.diffsinger.voicebank.is_dir():
        return f"voicebank folder {settings.diffsinger.voicebank} does not exist"
    try:
        check_voicebank(settings.diffsinger.voicebank)
    except EngineUnavailable as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class _Checkpoint:
    """The checks of a family that loads a checkpoint from a hub id or a local folder (its settings
    group `family`, its `loader.check_model_ref`, the file that marks a cached hub copy)."""

    family: str  # settings group and engines/<family>/ package
    marker: str  # config.json (transformers), model_index.json (diffusers)

    def _ref(self, settings: Settings) -> str:
        return str(getattr(settings, self.family).model)

    def _kind(self, ref: str) -> str:
        loader = importlib.import_module(f"harmonia.engines.{self.family}.loader")
        return str(loader.check_model_ref(ref))

    def precheck(self, settings: Settings) -> str | None:
        """A local path that is missing or is not this family's checkpoint: unavailable, with why."""
        try:
            self._kind(self._ref(settings))
        except EngineUnavailable as exc:
            return str(exc)
        return None

    def notice(self, settings: Settings) -> str | None:
        """A hub id not in the local cache yet: available, but the first job downloads it."""
        from harmonia.engines.checkpoints import in_hub_cache

        ref = self._ref(settings)
        if self._kind(ref) == "hub" and not in_hub_cache(ref, self.marker):
            variable = f"HARMONIA_{self.family.upper()}__MODEL"
            return (
                f"not loaded yet: the first job downloads {ref} from the Hugging Face hub (needs internet; "
                f"or set {variable} to a local checkpoint)"
            )
        return None


_MUSICGEN = _Checkpoint("musicgen", "config.json")
_ACESTEP = _Checkpoint("acestep", "model_index.json")
_STABLE_AUDIO = _Checkpoint("stable_audio", "model_index.json")


def _service_probe(url: str) -> str | None:
    """Is the model service at `url` up and loaded (`/readyz`)? Short timeouts: this answers a listing."""
    import httpx

    try:
        r = httpx.get(f"{url.rstrip('/')}/readyz", timeout=2.0)
    except httpx.HTTPError as exc:
        return f"model service {url} unreachable ({type(exc).__name__})"
    if r.status_code == 200:
        return None
    try:
        message = r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {r.status_code}"
    return f"model service {url} not ready: {message}"


def _ollama_probe(settings: Settings) -> str | None:
    """Is the LLM server up and does it have the model? (short timeouts: this answers a listing)"""
    from harmonia.engines.ollama.backends import build_llm_client
    from harmonia.errors import HarmoniaError

    quick = settings.ollama.model_copy(update={"timeout_s": 2.0})
    try:
        with build_llm_client(quick) as client:
            client.check_ready()
    except HarmoniaError as exc:
        return str(exc).splitlines()[0]
    return None


BUILTIN: tuple[ModelSpec, ...] = (
    ModelSpec(
        "jen1",
        "jen1",
        "Instruction-driven composition: free text -> a composed, rendered piece (WAV/FLAC + score + MIDI)",
        "harmonia.engines.jen1.input:Jen1Input",
        "harmonia.engines.factories:jen1",
        check="harmonia.engines.jen1.planner:check_plannable",
    ),
    ModelSpec(
        "render",
        "render",
        "Score or MIDI -> audio with SoundFont instruments",
        "harmonia.engines.render.engine:RenderInput",
        "harmonia.engines.factories:render",
    ),
    ModelSpec(
        "musicgen",
        "musicgen",
        "MusicGen text-to-music (Hugging Face transformers), with batching and streaming",
        "harmonia.engines.musicgen.input:MusicgenInput",
        "harmonia.engines.factories:musicgen",
        requires=("torch", "transformers"),
        extra="musicgen",
        precheck=_MUSICGEN.precheck,
        notice=_MUSICGEN.notice,
        license="CC-BY-NC-4.0 (MusicGen weights)",
    ),
    ModelSpec(
        "acestep",
        "acestep",
        "ACE-Step 1.5 (diffusers): songs with vocals from a style prompt and lyrics, 10 s to 10 min; repaint",
        "harmonia.engines.acestep.input:AceStepInput",
        "harmonia.engines.factories:acestep",
        requires=("torch", "transformers", "diffusers"),
        extra="diffusers",
        precheck=_ACESTEP.precheck,
        notice=_ACESTEP.notice,
        license="MIT (ACE-Step 1.5)",
    ),
    ModelSpec(
        "stable-audio",
        "stable-audio",
        "Stable Audio Open (diffusers): 44.1 kHz stereo clips up to the checkpoint's 47 s from a prompt",
        "harmonia.engines.stable_audio.input:StableAudioInput",
        "harmonia.engines.factories:stable_audio",
        requires=("torch", "transformers", "diffusers", "torchsde"),
        extra="diffusers",
        precheck=_STABLE_AUDIO.precheck,
        notice=_STABLE_AUDIO.notice,
        license="Stability AI Community License (Stable Audio Open)",
    ),
    ModelSpec(
        "diffsinger",
        "diffsinger",
        "Singing synthesis with an openvpi DiffSinger ONNX voicebank: lyrics + notes, MIDI or .ds",
        "harmonia.engines.diffsinger.input:SingingRequest",
        "harmonia.engines.factories:diffsinger",
        requires=("onnxruntime", "yaml"),
        extra="diffsinger",
        precheck=_diffsinger_precheck,
    ),
    ModelSpec(
        "ollama",
        "ollama",
        "LLM helper tasks (prompt enhancement, song plans, lyrics) via Ollama or an OpenAI-compatible API",
        "harmonia.engines.ollama.engine:OllamaPayload",
        "harmonia.engines.factories:ollama",
        probe=_ollama_probe,
    ),
    ModelSpec(
        "noop",
        "noop",
        "Diagnostic: exercises the job mechanics (sleep, progress, failure) without making music",
        "harmonia.engines.noop:NoopInput",
        "harmonia.engines.factories:noop",
    ),
)


class Registry:
    """The models this process knows, and the engines it has loaded (one per model, lazily)."""

    def __init__(self, settings: Settings, specs: tuple[ModelSpec, ...] = BUILTIN) -> None:
        self.settings = settings
        self.specs = {s.name: s for s in specs}
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self._probes: dict[str, tuple[float, str | None]] = {}
        self._checked: dict[str, tuple[float, str | None]] = {}  # unavailable_reason, when

    def spec(self, name: str) -> ModelSpec:
        spec = self.specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self.specs))
            raise InvalidInput(f"unknown model {name!r}; known models: {known}", "model")
        return spec

    def unavailable_reason(self, name: str, *, fresh: bool = False) -> str | None:
        """Why `name` cannot run here (None: it can), from its spec's checks. Submissions read a
        result up to PROBE_TTL_S old; `fresh` checks again (GET /v1/models, building an engine)."""
        spec = self.spec(name)
        now = time.monotonic()
        cached = self._checked.get(name)
        if not fresh and cached is not None and now - cached[0] < PROBE_TTL_S:
            return cached[1]
        reason = spec.unavailable_reason(self.settings)
        self._checked[name] = (now, reason)
        return reason

    def validate(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Check a payload against the model's input schema; InvalidInput names the first bad field."""
        spec = self.spec(name)
        reason = self.unavailable_reason(name)
        if reason:
            raise EngineUnavailable(f"model {name!r} is unavailable: {reason}")
        try:
            parsed = spec.schema().model_validate(payload)
            if spec.check is not None:
                _import(spec.check)(parsed)
        except InvalidInput as exc:  # raised by a model's own cross-field check, or spec.check
            fld = f"payload.{exc.field}" if exc.field else "payload"
            raise InvalidInput(f"{fld}: {exc.message}", fld) from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            fld = f"payload.{loc}" if loc else "payload"
            raise InvalidInput(f"{fld}: {first.get('msg', 'invalid')}", fld) from exc
        return parsed.model_dump(mode="json", exclude_unset=True)

    def engine(self, name: str) -> Engine:
        """The loaded engine for `name`, built on first use (thread-safe)."""
        with self._lock:
            engine = self._engines.get(name)
        if engine is not None:
            return engine
        spec = self.spec(name)
        reason = self.unavailable_reason(name, fresh=True)
        if reason:
            raise EngineUnavailable(f"model {name!r} is unavailable: {reason}")
        factory: Factory = _import(spec.factory)
        try:
            built = factory(self.settings, self)
        except EngineUnavailable:
            self._checked.pop(name, None)  # what the check passed failed to load: check again next time
            raise
        with self._lock:
            return self._engines.setdefault(name, built)

    def warm(self) -> None:
        """Import every available model's input schema and submission check now (their modules
        compile their patterns at import), so that the first submissions after a start do not pay
        for it (they did: 100-180 ms each, the gateway's p99 at one client)."""
        for name, spec in self.specs.items():
            if self.unavailable_reason(name) is not None:
                continue
            try:
                spec.schema()
                if spec.check is not None:
                    _import(spec.check)
            except ImportError:
                continue  # describe() reports it

    def loaded(self) -> dict[str, Engine]:
        with self._lock:
            return dict(self._engines)

    def _probe(self, spec: ModelSpec) -> str | None:
        url = spec.service_url(self.settings)
        if spec.probe is None and url is None:
            return None
        now = time.monotonic()
        cached = self._probes.get(spec.name)
        if cached is not None and now - cached[0] < PROBE_TTL_S:
            return cached[1]
        reason = _service_probe(url) if url else spec.probe(self.settings) if spec.probe else None
        self._probes[spec.name] = (now, reason)
        return reason

    def describe(self) -> list[dict[str, Any]]:
        """Every model with its availability, checked now (a voicebank broken since the last look
        shows), with a live probe (the Ollama daemon; the `/readyz` of a model service that serves
        it) and a `note` on what a model that is available but not loaded will need first."""
        out = []
        for spec in self.specs.values():
            reason = self.unavailable_reason(spec.name, fresh=True) or self._probe(spec)
            loaded = spec.name in self._engines
            entry: dict[str, Any] = {
                "name": spec.name,
                "queue": spec.queue,
                "description": spec.description,
                "available": reason is None,
                "reason": reason,
                "loaded": loaded,
            }
            if spec.license:
                entry["license"] = spec.license
            if reason is None and not loaded and spec.notice and not spec.service_url(self.settings):
                entry["note"] = spec.notice(self.settings)
            if reason is None:
                try:
                    entry["input_schema"] = spec.schema().model_json_schema()
                except ImportError as exc:
                    entry.update(available=False, reason=f"cannot import {spec.input_model}: {exc}")
            out.append(entry)
        return out
