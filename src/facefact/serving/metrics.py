"""Prometheus metrics of one server: its own registry (no process-wide state), served at /metrics."""
from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OUTCOMES = ("succeeded", "failed", "cancelled", "timeout", "rejected")
KINDS = ("portrait", "template")


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge("facefact_queue_depth", "jobs waiting for a worker", registry=self.registry)
        self.jobs = Counter("facefact_jobs", "jobs by outcome (rejected = queue full)", ["outcome"],
                            registry=self.registry)
        for outcome in OUTCOMES:  # every series exists from the start, at 0
            self.jobs.labels(outcome)
        # Counted where jobs enter the queue, so a server over Redis counts them too (outcomes happen
        # in the workers, which have no /metrics).
        self.submitted = Counter("facefact_jobs_submitted", "jobs accepted into the queue, by kind", ["kind"],
                                 registry=self.registry)
        for kind in KINDS:
            self.submitted.labels(kind)
        self.step_seconds = Histogram("facefact_step_seconds", "time of one denoising step",
                                      buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=self.registry)
        self.job_seconds = Histogram("facefact_job_seconds", "time a job ran on a worker",
                                     buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600), registry=self.registry)
        self.batch_jobs = Histogram("facefact_batch_jobs", "jobs run together as one pipeline call (one UNet "
                                    "batch); 1: alone", buckets=(1, 2, 3, 4, 6, 8, 12, 16), registry=self.registry)

    def bind_queue_depth(self, read: Callable[[], int]) -> None:
        self.queue_depth.set_function(read)

    def job_submitted(self, kind: str) -> None:
        self.submitted.labels(kind).inc()

    def job_finished(self, outcome: str) -> None:
        self.jobs.labels(outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
