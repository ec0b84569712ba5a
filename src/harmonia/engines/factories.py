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
    from harmonia.engines.render import RenderEngine

    return RenderEngine(soundfont=settings.soundfont)


def jen1(settings: Settings, registry: Registry) -> Engine:
    from harmonia.engines.jen1 import Jen1Engine
    from harmonia.engines.render import RenderEngine

    render_engine = registry.engine("render")
    if not isinstance(render_engine, RenderEngine):
        raise TypeError("the render model must be a RenderEngine")
    return Jen1Engine(render=render_engine)
