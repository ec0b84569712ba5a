"""Prometheus collectors read at scrape time (queue depths, through the queue that owns them)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from harmonia.errors import DependencyDown
from harmonia.jobs.queue import JobQueue


class QueueDepthCollector(Collector):
    def __init__(self, queue: JobQueue, queues: list[str]) -> None:
        self.queue = queue
        self.queues = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        waiting = GaugeMetricFamily("harmonia_queue_depth", "Messages waiting per queue", labels=["queue"])
        dead = GaugeMetricFamily(
            "harmonia_queue_dead_letters", "Dead-lettered messages per queue", labels=["queue"]
        )
        try:
            depths = self.queue.depths(self.queues)
        except DependencyDown:
            return
        for q, (n_waiting, n_dead) in depths.items():
            waiting.add_metric([q], n_waiting)
            dead.add_metric([q], n_dead)
        yield waiting
        yield dead
