"""Load bench: N clients submit no-op jobs for a while (default 60 s) while workers drain them.

Starts `harmonia up` (embedded Valkey, gateway, workers) on a free port with a temporary data dir,
or uses a running gateway (`--url`, `--api-key`). Prints and saves (PNG, matplotlib):

  throughput   accepted submissions/s and finished jobs/s, per second of the run
  latency      submission p50/p99 (client side) and queue-to-finish p50/p99 (from job records)
  errors       non-2xx answers and transport errors, by kind
  queue depth  `harmonia_queue_depth{queue="noop"}` from GET /metrics, sampled every 0.5 s

After the submission window it waits (up to --drain-s) for every job to finish, then lists all
jobs of the run (GET /v1/jobs, paged) and counts the ones that did not succeed (lost = 0 is the
expectation).

  python bench/load.py                                  # 16 clients, 60 s, 2 workers
  python bench/load.py --clients 32 --duration 120 --workers 4 --png load.png
  python bench/load.py --url http://127.0.0.1:8000 --api-key KEY
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

BODY = {"model": "noop", "mode": "async", "payload": {"note": "load"}}
DEPTH = re.compile(r'^harmonia_queue_depth\{queue="noop"\} ([0-9.e+]+)$', re.M)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_up(workers: int, threads: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    data = Path(tempfile.mkdtemp(prefix="harmonia-load-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARMONIA_")}
    env["HARMONIA_LOG_LEVEL"] = "WARNING"
    cmd = [sys.executable, "-m", "harmonia", "up", "--port", str(port), "--data-dir", str(data)]
    cmd += ["--workers", str(workers), "--threads", str(threads)]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url, data
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"harmonia up exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("harmonia up did not become ready in 90 s")


class Run:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.latencies: list[tuple[float, float]] = []  # (t, seconds) of accepted submissions
        self.errors: Counter[str] = Counter()
        self.ids: list[str] = []
        self.depth: list[tuple[float, float]] = []

    def now(self) -> float:
        return time.monotonic() - self.t0


async def client(http: httpx.AsyncClient, run: Run, until: float) -> None:
    while run.now() < until:
        started = time.monotonic()
        try:
            r = await http.post("/v1/jobs", json=BODY)
        except httpx.HTTPError as exc:
            run.errors[type(exc).__name__] += 1
            continue
        if r.status_code == 202:
            run.latencies.append((run.now(), time.monotonic() - started))
            run.ids.append(r.json()["id"])
        else:
            run.errors[f"HTTP {r.status_code}"] += 1
            if r.status_code == 429:
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))


async def sample_depth(http: httpx.AsyncClient, run: Run, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            m = DEPTH.search((await http.get("/metrics")).text)
            if m:
                run.depth.append((run.now(), float(m.group(1))))
        except httpx.HTTPError:
            pass
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


async def collect_jobs(http: httpx.AsyncClient, wanted: set[str]) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = (await http.get("/v1/jobs", params=params)).json()
        for job in page["jobs"]:
            if job["id"] in wanted:
                jobs[job["id"]] = job
        cursor = page.get("next_cursor")
        if not cursor or len(jobs) == len(wanted):
            return jobs


async def main_async(args: argparse.Namespace, url: str) -> tuple[Run, dict[str, dict[str, Any]], float]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.clients + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as http:
        run = Run()
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_depth(http, run, stop))
        await asyncio.gather(*(client(http, run, args.duration) for _ in range(args.clients)))
        submitted_at = run.now()
        drain_deadline = submitted_at + args.drain_s
        while run.now() < drain_deadline:
            if run.depth and run.depth[-1][0] > submitted_at and run.depth[-1][1] == 0:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # the last running jobs finish
        stop.set()
        await sampler
        jobs = await collect_jobs(http, set(run.ids))
        return run, jobs, submitted_at


def report(args: argparse.Namespace, run: Run, jobs: dict[str, dict[str, Any]], window: float) -> None:
    lat = [s for _, s in run.latencies]
    finished = [j for j in jobs.values() if j["status"] == "succeeded"]
    lost = len(run.ids) - len(finished)
    q2f = [j["finished_at"] - j["created_at"] for j in finished if j.get("finished_at")]
    ends = sorted(j["finished_at"] for j in finished)
    drain_span = (ends[-1] - ends[0]) if len(ends) > 1 else float("nan")
    print(f"clients {args.clients}, window {window:.0f} s")
    print(f"accepted       {len(run.ids)} ({len(run.ids) / window:.1f}/s)")
    print(f"finished       {len(finished)} ({len(finished) / drain_span:.1f}/s over {drain_span:.1f} s)")
    print(f"not succeeded  {lost}")
    print(f"errors         {dict(run.errors) or 0}")
    print(f"submit latency p50 {percentile(lat, 50) * 1000:.1f} ms, p99 {percentile(lat, 99) * 1000:.1f} ms")
    print(f"queue->finish  p50 {percentile(q2f, 50) * 1000:.0f} ms, p99 {percentile(q2f, 99) * 1000:.0f} ms")
    print(f"queue depth    max {max((d for _, d in run.depth), default=0):.0f}")
    plot(args.png, run, finished, window)
    print(f"plot           {args.png}")


def plot(path: Path, run: Run, finished: list[dict[str, Any]], window: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t_created = min((j["created_at"] for j in finished), default=0.0)
    offset = run.latencies[0][0] if run.latencies else 0.0
    seconds = int(max(window, *(j["finished_at"] - t_created + offset for j in finished), 1)) + 1
    accepted = [0] * seconds
    done = [0] * seconds
    for t, _ in run.latencies:
        accepted[min(int(t), seconds - 1)] += 1
    for j in finished:
        done[min(int(j["finished_at"] - t_created + offset), seconds - 1)] += 1
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    axes[0].plot(range(seconds), accepted, label="accepted/s")
    axes[0].plot(range(seconds), done, label="finished/s")
    axes[0].set_ylabel("jobs per second")
    axes[0].legend()
    axes[1].plot([t for t, _ in run.depth], [d for _, d in run.depth], color="tab:red")
    axes[1].set_ylabel("queue depth (noop)")
    per_s: dict[int, list[float]] = {}
    for t, s in run.latencies:
        per_s.setdefault(int(t), []).append(s * 1000)
    xs = sorted(per_s)
    axes[2].plot(xs, [percentile(per_s[x], 50) for x in xs], label="p50")
    axes[2].plot(xs, [percentile(per_s[x], 99) for x in xs], label="p99")
    axes[2].set_ylabel("submit latency (ms)")
    axes[2].set_xlabel("seconds since start")
    axes[2].legend()
    fig.suptitle(f"harmonia load: {len(run.ids)} noop jobs, {len(finished)} finished")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of submissions")
    parser.add_argument("--drain-s", type=float, default=300.0, help="longest wait for the queue to drain")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (when starting harmonia up)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (when starting it)")
    parser.add_argument("--url", help="a running gateway instead of starting `harmonia up`")
    parser.add_argument("--api-key", default=os.environ.get("HARMONIA_API_KEY"))
    parser.add_argument("--png", type=Path, default=Path("load.png"))
    args = parser.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc, url, _ = start_up(args.workers, args.threads)
    try:
        run, jobs, window = asyncio.run(main_async(args, url))
        report(args, run, jobs, window)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)


if __name__ == "__main__":
    main()
