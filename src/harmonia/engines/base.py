"""The engine contract: what every model engine implements and what it gets from its caller.

An engine loads once per process and serves many requests. It receives a validated payload (a
pydantic model of its own) and a `RunContext` through which it reports progress and learns that it
must stop (cancel, time limit). It returns an `EngineResult`: named artifacts plus JSON metadata.
Engines never import HTTP or Redis code; the worker, the model service and the CLI wrap them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Protocol, runtime_checkable

from pydantic import AliasChoices, BaseModel, ConfigDict, StringConstraints, model_validator
from pydantic.fields import FieldInfo

from harmonia.errors import InvalidInput

#: Bounded strings for input schemas: every payload field declares a limit (not only the body size).
Word = Annotated[str, StringConstraints(max_length=64)]  # names, notes, chords, phonemes
Line = Annotated[str, StringConstraints(max_length=500)]  # a line of lyrics


def _spellings(info: FieldInfo) -> list[str]:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str)]
    return []


@functools.cache
def _aliased(cls: type[BaseModel]) -> tuple[list[str], ...]:
    """The spellings of each field of `cls` that has more than one (read once per class)."""
    return tuple(sp for info in cls.model_fields.values() if len(sp := _spellings(info)) > 1)


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)  # True == 1 in Python


def _document_aliases(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    for name, info in cls.model_fields.items():
        others = _spellings(info)[1:]
        prop = schema.get("properties", {}).get(name)
        if others and isinstance(prop, dict):
            prop["x-aliases"] = others
            also = "also accepted as " + ", ".join(f"`{o}`" for o in others)
            prop["description"] = f"{prop['description']}; {also}" if prop.get("description") else also


class AliasedInput(BaseModel):
    """An input schema whose fields may also arrive under the names other APIs use for the same
    knob: a field declares `validation_alias=AliasChoices("duration_s", "duration")`, its own name
    first. Errors name the spelling that was sent; the JSON schema lists the others (`x-aliases`).
    Two spellings of one field with different values are a 422 naming both; equal values are fine."""

    model_config = ConfigDict(json_schema_extra=_document_aliases)

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for spellings in _aliased(cls):
            sent = [s for s in spellings if s in data]
            if len(sent) < 2:
                continue
            first = data[sent[0]]
            if any(not _same(data[s], first) for s in sent[1:]):
                values = " vs ".join(repr(data[s]) for s in sent)
                raise InvalidInput(
                    f"{' and '.join(sent)} name the same field and differ ({values}); send one", sent[0]
                )
            data = {k: v for k, v in data.items() if k not in sent[1:]}
        return data


@dataclass(frozen=True)
class ArtifactData:
    """One output file of a job, held in memory until the caller stores it."""

    name: str
    data: bytes
    content_type: str


@dataclass
class EngineResult:
    artifacts: list[ArtifactData] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class RunContext(Protocol):
    """Given to `Engine.run`. Implemented by the job runner, the model service and the CLI."""

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress in [0, 1]. Also a stop point: raises `JobStopped` when the job must end."""

    def check(self) -> None:
        """Raise `JobCanceled` / `JobTimedOut` when the job must stop; otherwise return at once."""

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """Publish an engine-specific event (e.g. a streamed audio chunk) to whoever watches the job."""


class LocalContext:
    """A `RunContext` for direct calls (CLI, tests): progress goes to a callback, nothing cancels."""

    def __init__(self, on_progress: Any = None, on_event: Any = None) -> None:
        self._on_progress = on_progress
        self._on_event = on_event

    def progress(self, fraction: float, message: str = "") -> None:
        if self._on_progress is not None:
            self._on_progress(min(max(fraction, 0.0), 1.0), message)

    def check(self) -> None:
        return None

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(kind, data)


class Engine(Protocol):
    """A loaded model. `run` may be called from several threads at once."""

    name: ClassVar[str]
    input_model: ClassVar[type[BaseModel]]

    def run(self, payload: BaseModel, ctx: RunContext) -> EngineResult: ...

    def info(self) -> dict[str, Any]:
        """What the engine is running (model, device, dtype, sample rate); shown by /info, /v1/models."""
        ...
