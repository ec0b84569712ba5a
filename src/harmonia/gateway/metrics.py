"""Prometheus collectors read at scrape time (queue depths straight from Redis)."""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from harmonia.jobs.queue import NAMESPACE


class QueueDepthCollector(Collector):
    def __init__(self, client: redis.Redis, queues: list[str]) -> None:
        self.client = client
        self.queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        waiting = GaugeMetricFamily("harmonia_queue_depth", "Messages waiting per queue", labels=["queue"])
        dead = GaugeMetricFamily(
            "harmonia_queue_dead_letters", "Dead-lettered messages per queue", labels=["queue"]
        )
        try:
            pipe = self.client.pipeline(transaction=False)
            for q in self.queues:
                pipe.llen(f"{NAMESPACE}:{q}")
                pipe.zcard(f"{NAMESPACE}:{q}.XQ")
            values = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            return
        for i, q in enumerate(self.queues):
            waiting.add_metric([q], values[2 * i])
            dead.add_metric([q], values[2 * i + 1])
        yield waiting
        yield dead
