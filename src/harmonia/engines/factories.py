"""How each built-in engine is constructed from settings. Imported only when an engine is needed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harmonia.config import Settings

if TYPE_CHECKING:
    from harmonia.engines.base import Engine
    from harmonia.engines.registry import Registry


def noop(settings: Settings, registry: Registry) -> Engine:
    from harmonia.engines.noop import NoopEngine

    return NoopEngine()


def render(settings: Settings, registry: Registry) -> Engine:
    from harmonia.engines.render.engine import RenderEngine

    return RenderEngine(soundfont=settings.soundfont)


def jen1(settings: Settings, registry: Registry) -> Engine:
    """jen1 needs only `render`. MusicGen, Stable Audio, ACE-Step, the singer and the LLM planner
    are optional: each is passed when its model is available here (built lazily, when a job first
    needs it), and jen1 falls back, saying so in the plan, whenever one is missing or fails."""
    from collections.abc import Callable
    from pathlib import Path

    from harmonia.engines.jen1.engine import Jen1Engine
    from harmonia.engines.render.engine import RenderEngine

    render_engine = registry.engine("render")
    if not isinstance(render_engine, RenderEngine):
        raise TypeError("the render model must be a RenderEngine")

    # model -> (its service URL, its checkpoint, the file that marks one in the hub cache)
    generative = {
        "musicgen": (settings.musicgen_url, settings.musicgen.model, "config.json"),
        "stable-audio": (settings.stable_audio_url, settings.stable_audio.model, "model_index.json"),
        "acestep": (settings.acestep_url, settings.acestep.model, "model_index.json"),
    }

    def weights_here(name: str) -> bool:
        # A service URL, a local checkpoint, or a hub id already cached: `auto` must never make
        # a job wait on a download (or fail on a machine without network).
        from harmonia.engines.checkpoints import in_hub_cache

        url, ref, marker = generative[name]
        return bool(url) or Path(ref).expanduser().is_dir() or in_hub_cache(ref, marker)

    def optional(name: str) -> Callable[[], Engine] | None:
        if name not in registry.specs or registry.unavailable_reason(name) is not None:
            return None
        if name in generative and not weights_here(name):
            return None
        return lambda: registry.engine(name)

    llm = None
    if {"url", "model"} & settings.ollama.model_fields_set:  # configured, not just the default
        from harmonia.engines.ollama.backends import build_llm_client

        llm = build_llm_client(settings.ollama)
    return Jen1Engine(
        render=render_engine,
        musicgen=optional("musicgen"),
        singer=optional("diffsinger"),
        stable_audio=optional("stable-audio"),
        acestep=optional("acestep"),
        llm=llm,
        llm_budget_s=settings.ollama.task_budget_s,
    )


def _remote(name: str, url: str, settings: Settings, registry: Registry) -> Engine:
    from harmonia.engines.remote import RemoteEngine

    return RemoteEngine(name, url, registry.spec(name).schema(), timeout_s=settings.max_job_timeout_s)


def musicgen(settings: Settings, registry: Registry) -> Engine:
    if settings.musicgen_url:
        return _remote("musicgen", settings.musicgen_url, settings, registry)
    from harmonia.engines.musicgen.engine import build_engine

    return build_engine(settings)


def acestep(settings: Settings, registry: Registry) -> Engine:
    if settings.acestep_url:
        return _remote("acestep", settings.acestep_url, settings, registry)
    from harmonia.engines.acestep.engine import build_engine

    return build_engine(settings)


def stable_audio(settings: Settings, registry: Registry) -> Engine:
    if settings.stable_audio_url:
        return _remote("stable-audio", settings.stable_audio_url, settings, registry)
    from harmonia.engines.stable_audio.engine import build_engine

    return build_engine(settings)


def diffsinger(settings: Settings, registry: Registry) -> Engine:
    from harmonia.engines.diffsinger.engine import DiffsingerEngine
    from harmonia.errors import EngineUnavailable

    if settings.diffsinger_url:
        return _remote("diffsinger", settings.diffsinger_url, settings, registry)
    if settings.diffsinger.voicebank is None:
        raise EngineUnavailable("no voicebank configured: set HARMONIA_DIFFSINGER__VOICEBANK")
    return DiffsingerEngine(settings.diffsinger.voicebank, device=settings.diffsinger.device)


def ollama(settings: Settings, registry: Registry) -> Engine:
    from harmonia.engines.ollama.engine import build_ollama_engine

    return build_ollama_engine(settings.ollama)
