"""API keys: never written to any log (gateway and worker at DEBUG, uvicorn access log on), never
stored in Redis or the data dir in clear; only their digests are held.

Already covered elsewhere (not repeated): owners isolated by key, 401 without a key or with an
unknown one (tests/gateway/test_gateway_api.py). Constant-time comparison is reviewed in
docs/reliability.md (auth.py hashes the presented key and runs hmac.compare_digest against every
configured digest without an early exit), not timed here.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import redis

from harmonia.config import Settings
from harmonia.redis_client import connect
from helpers import free_port, wait_for, worker_env

KEY_A = "hk_live_a8Zq3Kf7P0wQ9mXr"
KEY_B_DIGEST_OF = "hk_live_bYt62LdQ0pNe4sVc"  # configured as its sha256 digest only
WRONG = "hk_live_wrongWRONGwrong1"


def _spawn(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = worker_env(
        settings,
        HARMONIA_LOG_LEVEL="DEBUG",
        HARMONIA_API_KEYS=f"{KEY_A},sha256:{hashlib.sha256(KEY_B_DIGEST_OF.encode()).hexdigest()}",
    )
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "harmonia", *args], env=env, stdout=fh, stderr=subprocess.STDOUT
        )


def _all_redis_text(r: redis.Redis) -> bytes:
    out = []
    for key in r.scan_iter("*"):
        out.append(key)
        kind = r.type(key)
        if kind == b"string":
            out.append(r.get(key) or b"")
        elif kind == b"hash":
            out += [b"%s=%s" % kv for kv in r.hgetall(key).items()]
        elif kind == b"list":
            out += r.lrange(key, 0, -1)
        elif kind == b"set":
            out += list(r.smembers(key))
        elif kind == b"zset":
            out += r.zrange(key, 0, -1)
        elif kind == b"stream":
            out += [repr(e).encode() for e in r.xrange(key)]
    return b"\n".join(out)


def test_keys_never_logged_nor_stored_in_clear(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gw = _spawn(settings, tmp_path / "gateway.log", "gateway", "--port", str(port))
    wk = _spawn(settings, tmp_path / "worker.log", "worker", "--queues", "noop")
    try:
        wait_for(lambda: _up(url), timeout=60, interval=0.1)
        for key in (KEY_A, KEY_B_DIGEST_OF):
            auth = {"Authorization": f"Bearer {key}"}
            job = httpx.post(
                url + "/v1/jobs",
                json={"model": "noop", "mode": "sync", "payload": {"artifact": True}},
                headers=auth,
                timeout=30,
            ).json()
            assert job["status"] == "succeeded", job
            assert httpx.get(url + job["artifacts"][0]["url"], headers=auth).status_code == 200
            assert httpx.get(url + "/v1/jobs", headers=auth).status_code == 200
            assert httpx.get(url + "/v1/jobs/" + "0" * 20, headers=auth).status_code == 404
            r = httpx.post(url + "/v1/jobs", json={"model": "nope", "payload": {}}, headers=auth)
            assert r.status_code == 422 and key not in r.text
        for header in (f"Bearer {WRONG}", WRONG, f"Basic {WRONG}", f"bearer  {WRONG}"):
            r = httpx.get(url + "/v1/jobs", headers={"Authorization": header})
            assert r.status_code == 401 and WRONG not in r.text
    finally:
        for proc in (gw, wk):
            proc.send_signal(signal.SIGTERM)
        for proc in (gw, wk):
            proc.wait(timeout=30)
    logs = (tmp_path / "gateway.log").read_text(errors="replace") + (tmp_path / "worker.log").read_text(
        errors="replace"
    )
    assert "GET /v1/jobs" in logs or "POST /v1/jobs" in logs, "the access log is not on: nothing was checked"
    for secret in (KEY_A, KEY_B_DIGEST_OF, WRONG):
        assert secret not in logs, f"{secret} appears in a log"
    stored = _all_redis_text(connect(settings.redis_url or ""))
    files = b"".join(p.read_bytes() for p in settings.data_dir.rglob("*") if p.is_file())
    for secret in (KEY_A, KEY_B_DIGEST_OF, WRONG):
        assert secret.encode() not in stored and secret.encode() not in files
        # nor the full digest, which is what the key list holds: owners carry a short prefix only
        assert hashlib.sha256(secret.encode()).hexdigest().encode() not in stored


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
