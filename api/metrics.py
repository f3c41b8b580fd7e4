"""GET /metrics in Prometheus' text format (prometheus-client): HTTP requests and their latency
per route, measured as they happen; jobs by status, the queue, running jobs per worker, the
age of each worker's last heartbeat, failures by reason and epoch seconds, read from SQL when
scraped (so every API replica reports the same numbers, and a restart loses none).
The same middleware writes one log line per request (logger `annlab.http`), marked with the
job the path names."""

import logging
import re
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import JOB_STATUSES, Job, Metric, utcnow
from core.logs import job_context

request_log = logging.getLogger("annlab.http")
# /jobs/{id}..., /models/{id}...: the job a request is about, for its log lines.
_JOB_PATH = re.compile(r"^/(?:jobs|models)/([0-9a-f]{32})(?:/|$)")

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "annlab_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "annlab_http_request_seconds",
    "Time to answer an HTTP request, by method and route template",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# Observed by the predict batcher (api/serving.py): how many inputs each forward pass took,
# which says whether ANNLAB_BATCH_WINDOW_MS and ANNLAB_MAX_BATCH suit the traffic.
BATCH_INPUTS = Histogram(
    "annlab_predict_batch_inputs",
    "Inputs in each batched predict forward pass",
    registry=REGISTRY,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
)
# A failed job's error, by its first words, to a handful of reasons.
REASONS = (
    ("diverged", "training diverged"),
    ("memory", "memory"),
    ("dataset", "dataset"),
    ("worker_lost", "was lost"),
    ("cancelled", "cancel"),
)
RECENT_EPOCHS = 1000


def reason_of(error: str | None) -> str:
    text = (error or "").lower()
    return next((name for name, words in REASONS if words in text), "other")


class JobsCollector(Collector):
    """Gauges read from the jobs and metrics tables at each scrape, in the request's session
    (SQLite allows one writer: a second session would wait for the first)."""

    def __init__(self, session: Session):
        self.session = session

    def collect(self) -> Iterator[Any]:
        now = utcnow()
        session = self.session
        by_status = dict(
            session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        )
        waiting = dict(
            session.execute(
                select(Job.dispatched_at.is_not(None), func.count())
                .where(Job.status == "queued")
                .group_by(Job.dispatched_at.is_not(None))
            ).all()
        )
        running = session.execute(
            select(Job.worker, func.count(), func.max(Job.updated_at))
            .where(Job.status == "running")
            .group_by(Job.worker)
        ).all()
        errors = session.scalars(select(Job.error).where(Job.status == "failed")).all()
        recent = session.scalars(
            select(Metric.seconds)
            .where(Metric.epoch > 0)  # epoch 0 trains nothing
            .order_by(Metric.id.desc())
            .limit(RECENT_EPOCHS)
        ).all()
        jobs = GaugeMetricFamily("annlab_jobs", "Jobs by status", labels=["status"])
        for status in JOB_STATUSES:
            jobs.add_metric([status], by_status.get(status, 0))
        yield jobs
        queue = GaugeMetricFamily(
            "annlab_queue_depth",
            "Queued jobs: sent to the broker, or held (a sweep's, or not sent yet)",
            labels=["state"],
        )
        queue.add_metric(["sent"], waiting.get(True, 0))
        queue.add_metric(["held"], waiting.get(False, 0))
        yield queue
        per_worker = GaugeMetricFamily(
            "annlab_running_jobs", "Jobs running, by worker", labels=["worker"]
        )
        heartbeat = GaugeMetricFamily(
            "annlab_worker_heartbeat_age_seconds",
            "Seconds since a worker last renewed a job's lease",
            labels=["worker"],
        )
        for worker, count, last in running:
            per_worker.add_metric([worker or ""], count)
            if last is not None:
                heartbeat.add_metric([worker or ""], (now - last).total_seconds())
        yield per_worker
        yield heartbeat
        failures = GaugeMetricFamily(
            "annlab_jobs_failed", "Failed jobs by reason", labels=["reason"]
        )
        counts: dict[str, int] = {}
        for error in errors:
            counts[reason_of(error)] = counts.get(reason_of(error), 0) + 1
        for name in [n for n, _ in REASONS] + ["other"]:
            failures.add_metric([name], counts.get(name, 0))
        yield failures
        epochs = GaugeMetricFamily(
            "annlab_epoch_seconds_mean",
            f"Mean seconds of the last {RECENT_EPOCHS} epochs any job finished",
        )
        epochs.add_metric([], sum(recent) / len(recent) if recent else 0.0)
        yield epochs


def exposition(session: Session) -> tuple[bytes, str]:
    """The scrape: request metrics, plus the jobs of the database `session` reads."""
    registry = CollectorRegistry()
    registry.register(JobsCollector(session))
    return generate_latest(REGISTRY) + generate_latest(registry), CONTENT_TYPE_LATEST


class RequestMetrics:
    """Pure ASGI middleware: counts and times every HTTP request by its route template (so
    /jobs/{job_id} is one series, not one per job), and logs it; what is logged while a
    request about a job is answered carries that job's id."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def watched(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        match = _JOB_PATH.match(scope["path"])
        with job_context(match.group(1) if match else None):
            try:
                await self.app(scope, receive, watched)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                method, seconds = scope["method"], time.perf_counter() - started
                REQUESTS.labels(method, route, str(status)).inc()
                LATENCY.labels(method, route).observe(seconds)
                request_log.info(
                    "%s %s %d",
                    method,
                    scope["path"],
                    status,
                    extra={"route": route, "status": status, "ms": round(seconds * 1000, 2)},
                )
