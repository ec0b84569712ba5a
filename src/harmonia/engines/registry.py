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
    precheck: Callable[[Settings], str | None] | None = field(default=None, compare=False)
    # a live check of a dependency (a daemon) for GET /v1/models; cached briefly by the registry
    probe: Callable[[Settings], str | None] | None = field(default=None, compare=False)

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
    if settings.diffsinger.voicebank is None:
        return "no voicebank configured: set HARMONIA_DIFFSINGER__VOICEBANK to a DiffSinger voicebank folder"
    if not settings.diffsinger.voicebank.is_dir():
        return f"voicebank folder {settings.diffsinger.voicebank} does not exist"
    return None


def _ollama_probe(settings: Settings) -> str | None:
    """Is the LLM server up and does it have the model? (short timeouts: this answers a listing)"""
    from harmonia.engines.llm import build_llm_client
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
        "harmonia.engines.jen1:Jen1Input",
        "harmonia.engines.factories:jen1",
    ),
    ModelSpec(
        "render",
        "render",
        "Score or MIDI -> audio with SoundFont instruments",
        "harmonia.engines.render:RenderInput",
        "harmonia.engines.factories:render",
    ),
    ModelSpec(
        "musicgen",
        "musicgen",
        "MusicGen text-to-music (Hugging Face transformers), with batching and streaming",
        "harmonia.engines.musicgen:MusicgenInput",
        "harmonia.engines.factories:musicgen",
        requires=("torch", "transformers"),
        extra="musicgen",
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
        license="Stability AI Community License (Stable Audio Open)",
    ),
    ModelSpec(
        "diffsinger",
        "diffsinger",
        "Singing synthesis with an openvpi DiffSinger ONNX voicebank: lyrics + notes, MIDI or .ds",
        "harmonia.engines.singing_input:SingingRequest",
        "harmonia.engines.factories:diffsinger",
        requires=("onnxruntime", "yaml"),
        extra="diffsinger",
        precheck=_diffsinger_precheck,
    ),
    ModelSpec(
        "ollama",
        "ollama",
        "LLM helper tasks (prompt enhancement, song plans, lyrics) via Ollama or an OpenAI-compatible API",
        "harmonia.engines.prompt_tasks:OllamaPayload",
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

    def spec(self, name: str) -> ModelSpec:
        spec = self.specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self.specs))
            raise InvalidInput(f"unknown model {name!r}; known models: {known}", "model")
        return spec

    def validate(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Check a payload against the model's input schema; InvalidInput names the first bad field."""
        spec = self.spec(name)
        reason = spec.unavailable_reason(self.settings)
        if reason:
            raise EngineUnavailable(f"model {name!r} is unavailable: {reason}")
        try:
            parsed = spec.schema().model_validate(payload)
        except InvalidInput as exc:  # raised by a model's own cross-field check
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
        reason = spec.unavailable_reason(self.settings)
        if reason:
            raise EngineUnavailable(f"model {name!r} is unavailable: {reason}")
        factory: Factory = _import(spec.factory)
        built = factory(self.settings, self)
        with self._lock:
            return self._engines.setdefault(name, built)

    def loaded(self) -> dict[str, Engine]:
        with self._lock:
            return dict(self._engines)

    def _probe(self, spec: ModelSpec) -> str | None:
        if spec.probe is None or spec.service_url(self.settings):
            return None
        now = time.monotonic()
        cached = self._probes.get(spec.name)
        if cached is not None and now - cached[0] < PROBE_TTL_S:
            return cached[1]
        reason = spec.probe(self.settings)
        self._probes[spec.name] = (now, reason)
        return reason

    def describe(self) -> list[dict[str, Any]]:
        """Every model with its availability; a live probe (e.g. the Ollama daemon) counts too."""
        out = []
        for spec in self.specs.values():
            reason = spec.unavailable_reason(self.settings) or self._probe(spec)
            entry: dict[str, Any] = {
                "name": spec.name,
                "queue": spec.queue,
                "description": spec.description,
                "available": reason is None,
                "reason": reason,
                "loaded": spec.name in self._engines,
            }
            if spec.license:
                entry["license"] = spec.license
            if reason is None:
                try:
                    entry["input_schema"] = spec.schema().model_json_schema()
                except ImportError as exc:
                    entry.update(available=False, reason=f"cannot import {spec.input_model}: {exc}")
            out.append(entry)
        return out
