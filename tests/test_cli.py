"""The CLI's own checks: bad input is one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HARMONIA_")}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "harmonia", *args], capture_output=True, text=True, env=clean, timeout=60
    )


def test_open_gateway_refuses_a_public_bind() -> None:
    r = run("gateway", "--host", "0.0.0.0", HARMONIA_REDIS_URL="redis://127.0.0.1:1/0")
    assert r.returncode == 2
    assert "refusing to serve 0.0.0.0 without API keys" in r.stderr and "Traceback" not in r.stderr


def test_gateway_and_worker_need_a_redis_url() -> None:
    for cmd in ("gateway", "worker"):
        r = run(cmd)
        assert r.returncode == 2 and "HARMONIA_REDIS_URL" in r.stderr and "Traceback" not in r.stderr


def test_invalid_setting_is_one_line() -> None:
    r = run("worker", HARMONIA_REDIS_URL="redis://x", HARMONIA_WORKER_THREADS="lots")
    assert r.returncode == 2
    assert (
        r.stderr.startswith("error: invalid setting worker_threads")
        and len(r.stderr.strip().splitlines()) == 1
    )


def test_unknown_queue_and_unreachable_gateway() -> None:
    r = run("worker", "--queues", "nope", HARMONIA_REDIS_URL="redis://127.0.0.1:1/0")
    assert r.returncode == 2 and "no known queue" in r.stderr
    r = run("status", "abc", "--url", "http://127.0.0.1:1")
    assert r.returncode == 1 and r.stderr.startswith("error: cannot reach the gateway")
    r = run("submit", "jen1", "--payload", "{not json", "--url", "http://127.0.0.1:1")
    assert r.returncode == 2 and "--payload is not JSON" in r.stderr
