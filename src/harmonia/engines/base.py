"""The engine contract: what every model engine implements and what it gets from its caller.

An engine loads once per process and serves many requests. It receives a validated payload (a
pydantic model of its own) and a `RunContext` through which it reports progress and learns that it
must stop (cancel, time limit). It returns an `EngineResult`: named artifacts plus JSON metadata.
Engines never import HTTP or Redis code; the worker, the model service and the CLI wrap them.
"""

from __future__ import annotations

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
        for info in cls.model_fields.values():
            sent = [s for s in _spellings(info) if s in data]
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


# --- batching --------------------------------------------------------------------------------------
# Imports for the batcher live here so the contract above reads on its own.
import queue as _queue  # noqa: E402
import threading as _threading  # noqa: E402
import time as _time  # noqa: E402
from collections.abc import Callable as _Callable  # noqa: E402
from collections.abc import Sequence as _Sequence  # noqa: E402
from concurrent.futures import Future as _Future  # noqa: E402
from typing import Generic as _Generic  # noqa: E402
from typing import TypeVar as _TypeVar  # noqa: E402

from harmonia.errors import EngineError as _EngineError  # noqa: E402
from harmonia.errors import EngineUnavailable as _EngineUnavailable  # noqa: E402
from harmonia.errors import JobStopped as _JobStopped  # noqa: E402

P = _TypeVar("P")
R = _TypeVar("R")


@dataclass
class BatchItem(_Generic[P]):
    """One request inside a batch: its payload, its own context and the future its caller waits on."""

    payload: P
    ctx: RunContext
    future: _Future = field(default_factory=_Future)
    enqueued_at: float = field(default_factory=_time.monotonic)


@dataclass
class BatcherStats:
    batches: int = 0
    items: int = 0
    last_batch_size: int = 0
    max_batch_size_seen: int = 0
    splits: int = 0


class Batcher(_Generic[P, R]):
    """Collects requests from any thread and runs them together in batches.

    `run_batch(items)` gets up to `max_batch_size` items that arrived within `max_wait_ms` of the
    first one and returns one result or exception per item, in order; each caller gets its own.
    Batches run one at a time on the batcher's thread (one accelerator, one batch). If `run_batch`
    raises one of `split_on` (e.g. CUDA out of memory) the batch is halved and retried; any other
    exception fails every item of that batch. Items whose context is already stopped (canceled,
    timed out) are answered before the batch runs.
    """

    def __init__(
        self,
        run_batch: _Callable[[_Sequence[BatchItem[P]]], _Sequence[R | BaseException]],
        *,
        max_batch_size: int = 8,
        max_wait_ms: float = 20.0,
        split_on: tuple[type[BaseException], ...] = (),
        name: str = "batcher",
        on_batch: _Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._run_batch = run_batch
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = max(0.0, float(max_wait_ms)) / 1000.0
        self._split_on = split_on
        self._name = name
        self._on_batch = on_batch
        self._queue: _queue.Queue[BatchItem[P] | None] = _queue.Queue()
        self._lock = _threading.Lock()
        self._thread: _threading.Thread | None = None
        self._closed = False
        self.stats = BatcherStats()

    def submit(self, payload: P, ctx: RunContext) -> R:
        """Queue one request and block until its result is ready; raises the request's exception."""
        return self.submit_future(payload, ctx).result()

    def submit_future(self, payload: P, ctx: RunContext) -> _Future:
        item = BatchItem(payload, ctx)
        with self._lock:
            if self._closed:
                raise _EngineUnavailable(f"{self._name} is shut down")
            if self._thread is None:
                self._thread = _threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._queue.put(item)
        return item.future

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop taking requests; queued ones fail with EngineUnavailable; the running batch finishes."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._queue.put(None)
        if thread is not None:
            thread.join(timeout)
        while True:
            try:
                item = self._queue.get_nowait()
            except _queue.Empty:
                break
            if item is not None and not item.future.done():
                item.future.set_exception(_EngineUnavailable(f"{self._name} is shut down"))

    # ------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = first.enqueued_at + self.max_wait_s
            stop = False
            while len(batch) < self.max_batch_size:
                remaining = deadline - _time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except _queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[BatchItem[P]]) -> None:
        ready = []
        for item in batch:
            if item.future.done() or not item.future.set_running_or_notify_cancel():
                continue
            try:
                item.ctx.check()
            except _JobStopped as exc:
                item.future.set_exception(exc)
                continue
            ready.append(item)
        if ready:
            self._run_ready(ready)

    def _run_ready(self, items: list[BatchItem[P]]) -> None:
        try:
            results = list(self._run_batch(items))
        except self._split_on as exc:
            if len(items) == 1:
                self._fail(items, _EngineError(f"{type(exc).__name__}: {exc}".splitlines()[0]))
                return
            self.stats.splits += 1
            half = len(items) // 2
            self._run_ready(items[:half])
            self._run_ready(items[half:])
            return
        except BaseException as exc:  # noqa: BLE001 - every waiting caller must hear of any failure
            self._fail(items, exc)
            return
        if len(results) != len(items):
            msg = f"batch returned {len(results)} results for {len(items)} requests"
            self._fail(items, _EngineError(msg))
            return
        self.stats.batches += 1
        self.stats.items += len(items)
        self.stats.last_batch_size = len(items)
        self.stats.max_batch_size_seen = max(self.stats.max_batch_size_seen, len(items))
        if self._on_batch is not None:
            self._on_batch(len(items))
        for item, res in zip(items, results, strict=True):
            if isinstance(res, BaseException):
                item.future.set_exception(res)
            else:
                item.future.set_result(res)

    @staticmethod
    def _fail(items: list[BatchItem[P]], exc: BaseException) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(exc)
