"""Valkey (persistent, embedded) stopped and restarted on the same port and data dir while clients
submit and workers run: every job the gateway answered 2xx for finishes; a client that submitted
during the outage got a JSON 503 within a time bound, never a hang or another error."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from fault_cluster import Cluster, Submission, post_job, sized, state_events, wait_finished

from harmonia.config import Settings
from harmonia.embedded import EmbeddedValkey
from harmonia.redis_client import connect
from helpers import short_recovery

pytestmark = pytest.mark.slow

CLIENT_TIMEOUT_S = 30.0
ANSWER_BOUND_S = 12.0  # connect timeout 3 s + socket timeout 10 s would be the worst honest answer


@pytest.mark.parametrize(
    ("how", "fsync"),
    [("sigterm", "everysec"), ("sigkill", "always")],
    ids=["graceful-restart", "crash-restart-fsync-always"],
)
def test_valkey_restart_during_submission_and_processing(tmp_path: Path, how: str, fsync: str) -> None:
    data = tmp_path / "data"
    server = EmbeddedValkey(data, appendfsync=fsync)
    url = server.start()
    port = server.port
    # a job whose result could not be recorded during the outage is run again once its lease lapses
    # (30 s by default): short recovery timings keep the test from waiting that out
    settings = short_recovery(Settings(redis_url=url, data_dir=data))
    cluster = Cluster(settings, tmp_path / "logs")
    answers: list[tuple[float, Submission]] = []
    stop = threading.Event()
    t0 = time.monotonic()
    try:
        _, gw = cluster.gateway()
        cluster.worker("--queues", "noop")
        cluster.worker("--queues", "noop")

        def client(k: int) -> None:
            with httpx.Client(base_url=gw, timeout=CLIENT_TIMEOUT_S) as http:
                i = 0
                while not stop.is_set():
                    body = {"model": "noop", "payload": {"sleep_s": 0.05, "note": f"c{k}-{i}"}}
                    sent = time.monotonic() - t0
                    answers.append((sent, post_job(http, body)))
                    i += 1
                    time.sleep(0.02)

        clients = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(4)]
        for c in clients:
            c.start()
        time.sleep(1.5)
        down_at = time.monotonic() - t0
        if how == "sigterm":
            server.stop()
        else:
            server.kill()
        time.sleep(sized(2, 5))
        server = EmbeddedValkey(data, port=port, appendfsync=fsync)
        assert server.start() == url
        up_at = time.monotonic() - t0
        time.sleep(2.5)
        stop.set()
        for c in clients:
            c.join(timeout=CLIENT_TIMEOUT_S + 5)
        assert not any(c.is_alive() for c in clients), "a client is still waiting for an answer"

        accepted = [s.body["id"] for _, s in answers if 200 <= s.status < 300]
        refused = [(t, s) for t, s in answers if not 200 <= s.status < 300]
        print(
            f"\n{how}: down {down_at:.1f}-{up_at:.1f} s; {len(answers)} submissions, "
            f"{len(accepted)} accepted, refused by status {dict(Counter(s.status for _, s in refused))}, "
            f"slowest answer {max(s.elapsed for _, s in answers):.2f} s"
        )
        assert refused, "no submission met the outage: the test did not exercise it"
        for sent, sub in refused:
            assert sub.status == 503, (sent, sub)
            assert sub.body["error"]["code"] == "dependency_down" and "redis" in sub.body["error"]["message"]
            assert sub.elapsed < ANSWER_BOUND_S, (sent, sub)
        r = connect(url)
        states = wait_finished(r, accepted, timeout=60)
        lost = {i: s for i, s in states.items() if s != "succeeded"}
        assert not lost, lost
        events = state_events(r, accepted)
        assert all(ev.count("succeeded") == 1 for ev in events.values())
    finally:
        stop.set()
        cluster.stop()
        server.stop()
