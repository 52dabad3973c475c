"""Prometheus figures read from the SQL store and the broker at scrape time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from storage.repository import now, recent_stage_timings, status_counts, waiting_jobs
from storage.summary import as_utc, percentile
from tasks.app import STAGES
from tasks.health import live_workers
from tasks.priority import queue_length


class StoreCollector(Collector):
    """Jobs by status and jobs waiting too long (SQL), per-stage latency quantiles of recent jobs (SQL),
    queue length per stage (Redis)."""

    def __init__(self, sessions: sessionmaker[Session], broker: redis.Redis, queue_wait_warn: int = 60) -> None:
        self.sessions = sessions
        self.broker = broker
        self.queue_wait_warn = queue_wait_warn

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("cubeqa_jobs", "Jobs in the store by status", labels=["status"])
        with self.sessions() as session:
            counts = status_counts(session=session)
            timings = recent_stage_timings(session=session)
            waiting, oldest = waiting_jobs(session=session, older_than=timedelta(seconds=self.queue_wait_warn))
        for name, count in counts.items():
            jobs.add_metric([name], count)
        yield jobs
        backlog = GaugeMetricFamily("cubeqa_backlog_jobs", "Jobs not yet final (queued or running): what autoscaling should follow")
        backlog.add_metric([], counts["queued"] + counts["running"])
        yield backlog
        stuck = GaugeMetricFamily(
            "cubeqa_jobs_waiting_too_long",
            f"Jobs queued over CUBEQA_QUEUE_WAIT_WARN ({self.queue_wait_warn} s), no worker taking them: alert on > 0",
        )
        stuck.add_metric([], waiting)
        yield stuck
        age = GaugeMetricFamily("cubeqa_oldest_waiting_job_seconds", "Seconds the oldest of them has waited (0: none)")
        age.add_metric([], (now() - as_utc(oldest)).total_seconds() if oldest is not None else 0.0)
        yield age
        latency = GaugeMetricFamily("cubeqa_stage_latency_ms", "Per-item stage time over the last 1000 finished jobs", labels=["stage", "quantile"])
        for stage in STAGES:
            values = sorted(float(t[stage]) for t in timings if stage in t)
            for q in (50, 95, 99):
                if values:
                    latency.add_metric([stage, f"0.{q}"], percentile(values, q))
        yield latency
        depth = GaugeMetricFamily("cubeqa_queue_length", "Messages waiting in each stage's Redis queue, all priority levels", labels=["queue"])
        backlog_by_stage = GaugeMetricFamily(
            "cubeqa_stage_backlog", "Messages waiting or delivered-but-unacknowledged per stage: scale on this", labels=["stage"]
        )
        workers = GaugeMetricFamily(
            "cubeqa_stage_workers", "Workers with a live heartbeat on each stage queue: alert on 0", labels=["stage"]
        )
        try:
            for stage in STAGES:
                workers.add_metric([stage], live_workers(self.broker, stage))
            unacked = unacked_by_queue(self.broker)
            for stage in STAGES:
                waiting = queue_length(self.broker, stage)
                depth.add_metric([stage], waiting)
                backlog_by_stage.add_metric([stage], waiting + unacked.get(stage, 0))
        except redis.RedisError:
            pass  # broker down: the gauges are absent, /healthz says why
        yield depth
        yield backlog_by_stage
        yield workers


def unacked_by_queue(broker: redis.Redis) -> dict[str, int]:
    """Reserved or running messages per routing key, from the Redis transport's `unacked` hash
    (KEDA's LLEN and Flower cannot see these)."""
    counts: dict[str, int] = {}
    for raw in broker.hvals("unacked"):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            continue
        counts[routing_key] = counts.get(routing_key, 0) + 1
    return counts
