"""Benchmark: how fast the gateway accepts jobs, beside the raw Dramatiq send rate, in one run.

Starts `harmonia up` (embedded Valkey, gateway, one worker) on a free port with a temporary data
dir, or uses a running gateway (`--url`). Then it measures and prints, side by side:

  raw      `JobQueue.send()` in a tight loop against the same Valkey (messages/s), to a queue no
           worker consumes: the ceiling a gateway that did nothing but enqueue could reach;
  async    accepted `POST /v1/jobs` (noop, mode async) per second and p50/p99 latency at each
           concurrency level, and the ratio to the raw rate;
  roundtrip `mode: sync` noop jobs, one after another: submit -> 200 succeeded, p50/p99;

with the targets (>= 50% of the raw rate and p99 < 50 ms at 64 clients on 2 cores; round trip
p50 < 15 ms). Where it started the server it also reads the CPU time each process spent
(/proc), which says where the time goes without a profiler: gateway, worker, Valkey, and this
load generator, which shares the same cores.

  python bench/gateway.py                                   # start `harmonia up`, default sizes
  python bench/gateway.py --requests 500 --levels 1,16      # smaller
  python bench/gateway.py --url http://127.0.0.1:8000 --redis-url redis://...   # a running one
  python bench/gateway.py --json out.json
  python bench/gateway.py --client httpx                    # httpx as the load generator
  python bench/gateway.py --profile prof.txt                # py-spy (GIL holder, collapsed stacks)
                                                            # of gateway + worker in the last level

Every async submission becomes a real noop job that the worker runs; between phases the bench
waits for the queue to drain so one phase's backlog does not load the next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from harmonia.config import Settings
from harmonia.jobs.keys import BELL_PREFIX, RUNNING_KEY
from harmonia.jobs.queue import NAMESPACE, JobQueue
from harmonia.jobs.store import new_job_id
from harmonia.redis_client import connect

ASYNC_BODY = {"model": "noop", "mode": "async", "payload": {}}
SYNC_BODY = {"model": "noop", "mode": "sync", "payload": {}}
TARGET_RATIO = 0.5
TARGET_P99_S = 0.050
TARGET_ROUNDTRIP_P50_S = 0.015
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- CPU accounting from /proc (Linux) -------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int, float] | None:
    """(command name, parent pid, CPU seconds) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds of `root` (the gateway) and each of its descendants, by role."""
    stats: dict[int, tuple[str, int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = st
    out: Counter[str] = Counter()
    if root not in stats:
        return {}
    out["gateway"] = stats[root][2]
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (name, ppid, cpu) in stats.items():
            if ppid == parent:
                out["valkey" if "valkey" in name else "worker"] += cpu
                frontier.append(pid)
    return dict(out)


class CpuMeter:
    """CPU seconds spent by the server's processes and by this process between start and stop."""

    def __init__(self, root: int | None) -> None:
        self.root = root

    def __enter__(self) -> CpuMeter:
        self.before = process_tree_cpu(self.root) if self.root else {}
        self.client_before = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        after = process_tree_cpu(self.root) if self.root else {}
        self.used = {k: after.get(k, 0.0) - self.before.get(k, 0.0) for k in after}
        self.used["client"] = time.process_time() - self.client_before


def embedded_redis_url(data_dir: Path) -> str:
    """The embedded Valkey's URL, from the files it keeps under the data dir."""
    valkey = data_dir / "valkey"
    secret = (valkey / "valkey.secret").read_text().strip()
    port = int((valkey / "port").read_text().strip())
    return f"redis://harmonia:{quote(secret, safe='')}@127.0.0.1:{port}/0"


# --- the server under test -------------------------------------------------------------------------
class HarmoniaUp:
    """`harmonia up` as a subprocess on a free port with a temporary data dir."""

    def __init__(self, port: int | None = None) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="harmonia-bench-")
        self.data_dir = Path(self.tmp.name) / "data"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(self.tmp.name) / "harmonia-up.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        env = {k: v for k, v in os.environ.items() if k != "HARMONIA_REDIS_URL"}
        cmd = [sys.executable, "-m", "harmonia", "up", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir)]
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"harmonia up exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"harmonia up was not ready within {timeout:g} s:\n{self.log_tail()}")

    @property
    def redis_url(self) -> str:
        return embedded_redis_url(self.data_dir)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> int | None:
        """Ctrl-C, as a user would; SIGKILL only if it does not stop in time."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"harmonia up did not stop within {timeout:g} s; killing it", file=sys.stderr)
                self.proc.kill()
                code = self.proc.wait()
            self._log.close()
        self.tmp.cleanup()
        return code


# --- phases ----------------------------------------------------------------------------------------
RAW_QUEUE = "bench-raw"


def raw_send_rate(redis_url: str, n: int, warmup: int) -> dict[str, Any]:
    """The same JobQueue.send() the gateway calls (Dramatiq enqueue + doorbell), in a tight loop on
    one thread. It sends to a queue no worker consumes, so nothing competes with the loop and there
    is no backlog to drain afterwards; its keys are deleted at the end."""
    client = connect(redis_url)
    queue = JobQueue(Settings(redis_url=redis_url), client, [RAW_QUEUE])
    lat: list[float] = []
    try:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            queue.send(RAW_QUEUE, new_job_id(), 600.0)
            if i >= warmup:
                lat.append(time.perf_counter() - t0)
    finally:
        client.delete(f"{NAMESPACE}:{RAW_QUEUE}", f"{NAMESPACE}:{RAW_QUEUE}.msgs", BELL_PREFIX + RAW_QUEUE)
        client.zrem(f"{NAMESPACE}:__heartbeats__", queue.broker.broker_id)  # every dispatch beats
        queue.broker.close()
    return {"messages": n, "per_s": n / sum(lat), "p50_ms": percentile(lat, 0.5) * 1e3}


def start_profiler(root: int | None, out: Path | None) -> subprocess.Popen[bytes] | None:
    """py-spy (collapsed stacks, gateway and its worker processes) while the last level runs."""
    if out is None or root is None:
        return None
    exe = Path(sys.executable).with_name("py-spy")
    cmd = [str(exe) if exe.exists() else "py-spy", "record", "--pid", str(root), "--subprocesses"]
    cmd += ["--gil", "--rate", "200", "--format", "raw", "--output", str(out), "--nonblocking"]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # let it attach before the load starts
    return spy


def stop_profiler(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is None:
        return
    spy.send_signal(signal.SIGINT)
    try:
        _, err = spy.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        err = b""
    if spy.returncode:
        print(f"py-spy failed: {err.decode(errors='replace').strip()[-300:]}", file=sys.stderr)


def wait_drained(redis_url: str | None, http: httpx.Client, timeout: float = 600.0) -> float:
    """Wait until the noop queue is empty and nothing runs; returns the seconds it took."""
    t0 = time.monotonic()
    client = connect(redis_url) if redis_url else None
    while time.monotonic() - t0 < timeout:
        if client is not None:
            busy = client.llen(f"{NAMESPACE}:noop") + client.zcard(RUNNING_KEY)
        else:
            models = http.get("/v1/models").json()["models"]
            busy = sum(m.get("queue_depth") or 0 for m in models if m["name"] == "noop")
        if not busy:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise RuntimeError(f"the noop queue did not drain within {timeout:g} s")


class LightClient:
    """A minimal HTTP/1.1 keep-alive connection for the load generator. httpx spends more CPU per
    request than the gateway does (measured: ~2 ms at 1 client, ~10 ms at 64 on this machine), and
    here the client shares the server's cores, so it would measure itself. This one writes a
    prebuilt request and reads a Content-Length response: tens of microseconds."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        self.writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError("response without Content-Length; use --client httpx")
        length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
        body = await reader.readexactly(length)
        if b"\r\nconnection: close" in lower:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


def build_request(url: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    parsed = urlsplit(url)
    data = json.dumps(body).encode()
    lines = [
        f"POST {parsed.path.rstrip('/')}{path} HTTP/1.1",
        f"Host: {parsed.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def submit_level(
    url: str, headers: dict[str, str], concurrency: int, requests: int, warmup: int, kind: str
) -> dict[str, Any]:
    """`concurrency` clients, each on its own keep-alive connection, share `requests` submissions."""
    parsed = urlsplit(url)
    if kind == "light" and parsed.scheme != "http":
        kind = "httpx"  # the light client speaks plain HTTP only
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    pool = httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60)
    raw = build_request(url, "/v1/jobs", ASYNC_BODY, headers)
    conns = [LightClient(parsed.hostname or "127.0.0.1", parsed.port or 80) for _ in range(concurrency)]

    async def burst(count: int) -> tuple[list[float], Counter[int], float]:
        lat: list[float] = []
        statuses: Counter[int] = Counter()
        todo = iter(range(count))

        async def one_client(conn: LightClient) -> None:
            for _ in todo:  # one shared iterator: asyncio runs one coroutine at a time
                t0 = time.perf_counter()
                if kind == "light":
                    status, _ = await conn.request(raw)
                else:
                    status = (await pool.post("/v1/jobs", json=ASYNC_BODY)).status_code
                statuses[status] += 1
                if status == 202:
                    lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in conns))
        return lat, statuses, time.perf_counter() - t0

    try:
        await burst(warmup)
        lat, statuses, wall = await burst(requests)
    finally:
        await pool.aclose()
        for conn in conns:
            await conn.close()
    return {
        "concurrency": concurrency,
        "client": kind,
        "requests": requests,
        "accepted": statuses[202],
        "other_statuses": {str(k): v for k, v in statuses.items() if k != 202},
        "wall_s": wall,
        "per_s": statuses[202] / wall,
        "p50_ms": percentile(lat, 0.5) * 1e3,
        "p99_ms": percentile(lat, 0.99) * 1e3,
    }


def round_trips(url: str, headers: dict[str, str], n: int, warmup: int) -> dict[str, Any]:
    """Sequential `mode: sync` noop jobs: submit -> 200 succeeded."""
    lat: list[float] = []
    bad: Counter[str] = Counter()
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            response = client.post("/v1/jobs", json=SYNC_BODY)
            dt = time.perf_counter() - t0
            ok = response.status_code == 200 and response.json().get("status") == "succeeded"
            if not ok:
                bad[f"{response.status_code} {response.json().get('status', '')}".strip()] += 1
            elif i >= warmup:
                lat.append(dt)
    return {
        "jobs": n,
        "succeeded": len(lat),
        "other": dict(bad),
        "p50_ms": percentile(lat, 0.5) * 1e3,
        "p99_ms": percentile(lat, 0.99) * 1e3,
    }


# --- report ----------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def cpu_line(per: dict[str, float], unit: str) -> str:
    parts = [f"{role} {ms:.2f}" for role, ms in sorted(per.items())]
    return f"      CPU ms per {unit}: " + ", ".join(parts) + f" (total {sum(per.values()):.2f})"


def print_report(res: dict[str, Any]) -> None:
    env = res["machine"]
    print(
        f"\nharmonia gateway benchmark  ({env['cores']} cores usable, load avg {env['loadavg_before']}"
        f" before / {env['loadavg_after']} after, Python {env['python']})"
    )
    print(f"server: {res['server']}")
    raw = res.get("raw")
    raw_rate = raw["per_s"] if raw else None
    if raw:
        print(
            f"\nraw Dramatiq send (JobQueue.send, 1 thread): {raw['per_s']:8.0f} msg/s"
            f"   p50 {raw['p50_ms']:.2f} ms"
        )
    else:
        print("\nraw Dramatiq send: not measured (no Redis URL; pass --redis-url or --data-dir)")
    client = res["levels"][0]["client"] if res["levels"] else "?"
    print(f"\nasync submissions, POST /v1/jobs (noop), load generator: {client} client in this process:")
    print(f"  {'clients':>7} {'accepted/s':>11} {'vs raw':>7} {'p50 ms':>8} {'p99 ms':>8}  other")
    for lv in res["levels"]:
        ratio = f"{lv['per_s'] / raw_rate:6.0%}" if raw_rate else "    n/a"
        other = ", ".join(f"{k}x{v}" for k, v in lv["other_statuses"].items()) or "-"
        print(
            f"  {lv['concurrency']:>7} {lv['per_s']:>11.0f} {ratio:>7} {lv['p50_ms']:>8.1f} "
            f"{lv['p99_ms']:>8.1f}  {other}"
        )
        if "cpu_ms_per_request" in lv:
            print(cpu_line(lv["cpu_ms_per_request"], "request"))
        if "drain_s" in lv:
            print(f"      worker drained the backlog in {lv['drain_s']:.1f} s after the level")
    rt = res["roundtrip"]
    print(
        f"\nno-op round trip (mode sync -> 200 succeeded), {rt['jobs']} sequential: "
        f"p50 {rt['p50_ms']:.1f} ms, p99 {rt['p99_ms']:.1f} ms"
        + (f"  (not succeeded: {rt['other']})" if rt["other"] else "")
    )
    if "cpu_ms_per_job" in rt:
        print(cpu_line(rt["cpu_ms_per_job"], "job"))
    print("\ntargets:")
    for t in res["targets"]:
        print(f"  {t['name']:<44} target {t['target']:<12} measured {t['measured']:<12} {t['verdict']}")


def targets(res: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    raw = res.get("raw")
    top = max(res["levels"], key=lambda lv: lv["concurrency"], default=None)
    if top is not None:
        if raw:
            ratio = top["per_s"] / raw["per_s"]
            out.append(
                {
                    "name": f"accepted/s at {top['concurrency']} clients vs raw send",
                    "target": f">= {TARGET_RATIO:.0%}",
                    "measured": f"{ratio:.0%}",
                    "verdict": verdict(ratio >= TARGET_RATIO),
                }
            )
        out.append(
            {
                "name": f"p99 latency at {top['concurrency']} clients",
                "target": f"< {TARGET_P99_S * 1e3:.0f} ms",
                "measured": f"{top['p99_ms']:.1f} ms",
                "verdict": verdict(top["p99_ms"] < TARGET_P99_S * 1e3),
            }
        )
    rt = res["roundtrip"]
    out.append(
        {
            "name": "no-op round trip p50",
            "target": f"< {TARGET_ROUNDTRIP_P50_S * 1e3:.0f} ms",
            "measured": f"{rt['p50_ms']:.1f} ms",
            "verdict": verdict(rt["p50_ms"] < TARGET_ROUNDTRIP_P50_S * 1e3),
        }
    )
    if res["machine"]["cores"] != 2:
        out.append(
            {
                "name": "(targets are stated for 2 cores; this machine has)",
                "target": "2",
                "measured": str(res["machine"]["cores"]),
                "verdict": "NOTE",
            }
        )
    return out


def redis_url_for(args: argparse.Namespace, server: HarmoniaUp | None) -> str | None:
    if args.redis_url:
        return str(args.redis_url)
    if server is not None:
        return os.environ.get("HARMONIA_REDIS_URL") or server.redis_url
    if args.data_dir:
        return embedded_redis_url(Path(args.data_dir))
    return os.environ.get("HARMONIA_REDIS_URL")


def run(args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    server = None if args.url else HarmoniaUp()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    res: dict[str, Any] = {
        "machine": {
            "cores": cores,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        },
        "levels": [],
    }
    try:
        if server is not None:
            print(f"starting harmonia up on {server.url} (data in {server.data_dir}) ...", file=sys.stderr)
            server.start()
        url = args.url or (server.url if server else "")
        res["server"] = f"harmonia up started by the bench at {url}" if server else f"gateway at {url}"
        redis_url = redis_url_for(args, server)
        root = server.proc.pid if server is not None and server.proc is not None else None
        http = httpx.Client(base_url=url, headers=headers, timeout=30)

        print(f"round trip: {args.roundtrips} sync noop jobs ...", file=sys.stderr)
        wait_drained(redis_url, http)
        warm_rt = min(20, args.roundtrips)
        with CpuMeter(root) as meter:
            res["roundtrip"] = round_trips(url, headers, args.roundtrips, warmup=warm_rt)
        if root:
            res["roundtrip"]["cpu_ms_per_job"] = {
                k: 1e3 * v / (args.roundtrips + warm_rt) for k, v in meter.used.items()
            }

        if redis_url:
            print(f"raw send: {args.raw} messages ...", file=sys.stderr)
            res["raw"] = raw_send_rate(redis_url, args.raw, warmup=min(200, args.raw))

        for i, level in enumerate(args.levels):
            print(f"async submissions: {level} clients x {args.requests} requests ...", file=sys.stderr)
            warm = min(args.requests, max(200, 4 * level))
            spy = start_profiler(root, args.profile) if i == len(args.levels) - 1 else None
            with CpuMeter(root) as meter:
                stats = asyncio.run(submit_level(url, headers, level, args.requests, warm, args.client))
            stop_profiler(spy)
            if root:
                # the meter covers the warm-up burst too: per request, count both
                stats["cpu_ms_per_request"] = {
                    k: 1e3 * v / (args.requests + warm) for k, v in meter.used.items()
                }
            stats["drain_s"] = wait_drained(redis_url, http)
            res["levels"].append(stats)
        http.close()
    finally:
        if server is not None:
            print("stopping harmonia up ...", file=sys.stderr)
            code = server.stop()
            res["server_exit_code"] = code
    res["machine"]["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    res["targets"] = targets(res)
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="async submissions per level")
    p.add_argument(
        "--levels",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[1, 16, 64],
        help="concurrent clients, comma-separated",
    )
    p.add_argument("--raw", type=int, default=5000, help="raw Dramatiq sends")
    p.add_argument("--roundtrips", type=int, default=200, help="sequential sync no-op jobs")
    p.add_argument("--url", help="use this running gateway instead of starting `harmonia up`")
    p.add_argument("--redis-url", help="its Redis/Valkey (for the raw send rate); default: from --data-dir")
    p.add_argument("--data-dir", help="the running server's data dir (reads valkey/port and valkey.secret)")
    p.add_argument("--api-key", default=os.environ.get("HARMONIA_API_KEY"), help="API key, if needed")
    p.add_argument(
        "--client",
        choices=["light", "httpx"],
        default="light",
        help="load generator for the async levels (light: a minimal keep-alive HTTP/1.1 client)",
    )
    p.add_argument("--profile", type=Path, help="py-spy the gateway during the last level into this file")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    if args.requests < 1 or args.raw < 1 or args.roundtrips < 1 or not args.levels:
        p.error("--requests, --raw, --roundtrips and --levels must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = run(args)
    print_report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
