"""The generic Batcher: batching window, per-caller results and errors, splitting, cancel, close."""

from __future__ import annotations

import threading
import time

import pytest

from harmonia.engines.base import LocalContext
from harmonia.engines.batcher import Batcher
from harmonia.errors import EngineError, EngineUnavailable, JobCanceled


class _Canceled(LocalContext):
    def check(self) -> None:
        raise JobCanceled("gone")


class _Oom(Exception):
    pass


def _run_all(batcher: Batcher, payloads: list, ctxs: list | None = None) -> dict:
    out: dict = {}

    def call(i: int, p) -> None:
        try:
            out[i] = batcher.submit(p, (ctxs or [LocalContext()] * len(payloads))[i])
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=call, args=(i, p)) for i, p in enumerate(payloads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


def test_concurrent_requests_form_one_batch_and_each_gets_its_own_answer() -> None:
    seen: list[list] = []

    def run(items):
        seen.append([it.payload for it in items])
        return [ValueError("odd") if it.payload % 2 else it.payload * 10 for it in items]

    b = Batcher(run, max_batch_size=8, max_wait_ms=300)
    out = _run_all(b, [1, 2, 3, 4])
    assert len(seen) == 1 and sorted(seen[0]) == [1, 2, 3, 4]
    assert type(out[0]) is ValueError and out[1] == 20 and type(out[2]) is ValueError and out[3] == 40
    assert b.stats.batches == 1 and b.stats.max_batch_size_seen == 4
    b.close()


def test_batches_are_capped_at_max_batch_size() -> None:
    sizes: list[int] = []

    def run(items):
        sizes.append(len(items))
        time.sleep(0.05)
        return [it.payload for it in items]

    b = Batcher(run, max_batch_size=3, max_wait_ms=200)
    out = _run_all(b, list(range(7)))
    assert sorted(out.values()) == list(range(7))
    assert max(sizes) <= 3 and sum(sizes) == 7
    b.close()


def test_a_batch_failing_with_split_on_is_halved_and_retried() -> None:
    calls: list[int] = []

    def run(items):
        calls.append(len(items))
        if len(items) > 1:
            raise _Oom("out of memory")
        return [it.payload for it in items]

    b = Batcher(run, max_batch_size=4, max_wait_ms=300, split_on=(_Oom,))
    out = _run_all(b, [1, 2, 3, 4])
    assert sorted(out.values()) == [1, 2, 3, 4] and calls[0] == 4 and b.stats.splits >= 1
    b.close()


def test_single_item_oom_and_other_errors_reach_the_caller() -> None:
    b = Batcher(lambda items: (_ for _ in ()).throw(_Oom("oom")), max_wait_ms=0, split_on=(_Oom,))
    with pytest.raises(EngineError, match="oom"):
        b.submit(1, LocalContext())
    b.close()
    b = Batcher(lambda items: (_ for _ in ()).throw(RuntimeError("boom")), max_wait_ms=0)
    with pytest.raises(RuntimeError, match="boom"):
        b.submit(1, LocalContext())
    b.close()


def test_stopped_requests_are_answered_without_running() -> None:
    ran: list = []

    def run(items):
        ran.extend(it.payload for it in items)
        return [it.payload for it in items]

    b = Batcher(run, max_wait_ms=200)
    out = _run_all(b, ["a", "b"], [_Canceled(), LocalContext()])
    assert isinstance(out[0], JobCanceled) and out[1] == "b" and ran == ["b"]
    b.close()
    with pytest.raises(EngineUnavailable):
        b.submit("c", LocalContext())
