"""The batcher: requests from any thread (HTTP handlers, worker threads) are collected into
batches and run together, so one forward pass of a model serves several jobs. Each request keeps its
own context (progress, cancel, time limit) and gets its own result or error.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from harmonia.engines.base import RunContext
from harmonia.errors import EngineError, EngineUnavailable, JobStopped

P = TypeVar("P")
R = TypeVar("R")


@dataclass
class BatchItem(Generic[P]):
    """One request inside a batch: its payload, its own context and the future its caller waits on."""

    payload: P
    ctx: RunContext
    future: Future = field(default_factory=Future)
    enqueued_at: float = field(default_factory=time.monotonic)


@dataclass
class BatcherStats:
    batches: int = 0
    items: int = 0
    last_batch_size: int = 0
    max_batch_size_seen: int = 0
    splits: int = 0


class Batcher(Generic[P, R]):
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
        run_batch: Callable[[Sequence[BatchItem[P]]], Sequence[R | BaseException]],
        *,
        max_batch_size: int = 8,
        max_wait_ms: float = 20.0,
        split_on: tuple[type[BaseException], ...] = (),
        name: str = "batcher",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._run_batch = run_batch
        self.max_batch_size = int(max_batch_size)
        self.max_wait_s = max(0.0, float(max_wait_ms)) / 1000.0
        self._split_on = split_on
        self._name = name
        self._on_batch = on_batch
        self.queue: queue.Queue[BatchItem[P] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.stats = BatcherStats()

    def submit(self, payload: P, ctx: RunContext) -> R:
        """Queue one request and block until its result is ready; raises the request's exception."""
        return self.submit_future(payload, ctx).result()

    def submit_future(self, payload: P, ctx: RunContext) -> Future:
        item = BatchItem(payload, ctx)
        with self._lock:
            if self._closed:
                raise EngineUnavailable(f"{self._name} is shut down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self.queue.put(item)
        return item.future

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop taking requests; queued ones fail with EngineUnavailable; the running batch finishes."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self.queue.put(None)
        if thread is not None:
            thread.join(timeout)
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and not item.future.done():
                item.future.set_exception(EngineUnavailable(f"{self._name} is shut down"))

    # ------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            deadline = first.enqueued_at + self.max_wait_s
            stop = False
            while len(batch) < self.max_batch_size:
                remaining = deadline - time.monotonic()
                try:
                    item = self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
                except queue.Empty:
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
            except JobStopped as exc:
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
                self._fail(items, EngineError(f"{type(exc).__name__}: {exc}".splitlines()[0]))
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
            self._fail(items, EngineError(msg))
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
