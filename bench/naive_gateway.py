"""The anchor of bench/gateway.py: the naive implementation of a job gateway, as a small team would
write it first. FastAPI + uvicorn, one sync route that validates `{model, mode, payload}` with
pydantic and sends one Dramatiq message to Redis/Valkey. No job record, no auth, no checks, no
idempotency, no rate limit: what Harmonia's gateway is measured against.

  python bench/naive_gateway.py serve --port 8100 --redis-url redis://...
  python bench/naive_gateway.py worker --redis-url redis://...     # drains its queue (no-op jobs)
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any, Literal

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from pydantic import BaseModel

QUEUE = "naive"


class JobIn(BaseModel):
    model: str
    mode: Literal["sync", "async"] = "async"
    payload: dict[str, Any]


def build(redis_url: str) -> tuple[dramatiq.Actor, RedisBroker]:
    broker = RedisBroker(url=redis_url, namespace="naive")
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=QUEUE, broker=broker)
    def run_job(job_id: str, model: str, payload: dict[str, Any]) -> None:
        """The no-op job: the anchor measures acceptance, not work."""

    return run_job, broker


def create_app(redis_url: str) -> Any:
    from fastapi import FastAPI

    run_job, _ = build(redis_url)
    app = FastAPI()

    @app.post("/job", status_code=202)
    def submit(job: JobIn) -> dict[str, str]:
        job_id = uuid.uuid4().hex
        run_job.send(job_id, job.model, job.payload)
        return {"job_id": job_id, "status": "queued"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["serve", "worker"])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    if args.what == "serve":
        import uvicorn

        uvicorn.run(create_app(args.redis_url), host="127.0.0.1", port=args.port, log_level="warning")
    else:
        import signal
        import threading

        _, broker = build(args.redis_url)
        worker = dramatiq.Worker(broker, worker_threads=2)
        worker.start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        stop.wait()
        worker.stop()


if __name__ == "__main__":
    main()
