"""Prometheus metrics of the web service (``GET /metrics``).

Counted in the process: HTTP requests and their latency per route and page type, errors, predictions per page type
and scoring model, ingested objects per class. Read from the database at scrape time (a custom collector): the
served version of each trained model and its age, training runs by model and status, the last completed run's
duration and memory, the training queue.

Under gunicorn with several workers the counters live in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
multi-process mode; ``metrics_multiprocess.prepare`` sets it before any worker starts), and a scrape of any worker
sums all of them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import Flask, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from recommender_system.domain import Page
from recommender_system.storage.database import Database
from recommender_system.storage.tables import TrainingJob, TrainingRun, utcnow
from recommender_system.storage.training import TrainingStore

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1)

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PAGES = frozenset(page.value for page in Page)
PAGE_ROUTES = {"/predict": None, "/predict/product_positions": Page.CATEGORY_LIST.value}

REQUESTS = Counter(
    "rs_http_requests", "HTTP requests answered, by route, page type and status", ["method", "route", "page", "status"]
)
REQUEST_LATENCY = Histogram(
    "rs_http_request_duration_seconds",
    "Time to answer an HTTP request, by route and page type",
    ["method", "route", "page"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter("rs_http_errors", "HTTP responses with a 4xx or 5xx status, by route and status", ["route", "status"])
PREDICTIONS = Counter("rs_predictions", "Predictions answered, by page type and scoring model", ["page", "model"])
PREDICTION_LATENCY = Histogram(
    "rs_prediction_duration_seconds",
    "Time of the prediction pipeline, by page type and scoring model",
    ["page", "model"],
    buckets=LATENCY_BUCKETS,
)
INGESTED = Counter("rs_ingested_objects", "Objects stored through /store_object(s), by _model_class", ["model_class"])


# ------------------------------------------------------------------------------------------------ observers
def observe_prediction(page: str, model_name: str, seconds: float) -> None:
    """One answered prediction (called by the prediction pipeline)."""
    PREDICTIONS.labels(page=str(page), model=model_name).inc()
    PREDICTION_LATENCY.labels(page=str(page), model=model_name).observe(max(0.0, seconds))


def observe_ingest(counts: dict[str, int]) -> None:
    """Objects stored in one call, by ``_model_class`` (called by the data manager)."""
    for model_class, count in counts.items():
        if count:
            INGESTED.labels(model_class=model_class).inc(count)


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "<unmatched>"


def _page(route: str) -> str:
    """The page type of a prediction request ("" for other routes; "other" for an unknown value)."""
    if route not in PAGE_ROUTES:
        return ""
    value: Any = None
    body = request.get_json(silent=True, force=True, cache=True)
    if isinstance(body, dict):
        value = body.get("recommendation_type")
    value = value or PAGE_ROUTES[route]
    return value if isinstance(value, str) and value in PAGES else "other"


def install(app: Flask) -> None:
    """Count and time every request (the timer starts before any other before-request hook, the token check
    included)."""

    def start_timer() -> None:
        g.rs_request_started = time.perf_counter()

    def record(response: Any) -> Any:
        started = g.pop("rs_request_started", None)
        route = _route()
        try:
            page = _page(route)
        except Exception:  # a body that cannot be read must not break the response
            page = "other"
        status = str(response.status_code)
        REQUESTS.labels(method=request.method, route=route, page=page, status=status).inc()
        if started is not None:
            REQUEST_LATENCY.labels(method=request.method, route=route, page=page).observe(time.perf_counter() - started)
        if response.status_code >= 400:
            ERRORS.labels(route=route, status=status).inc()
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, start_timer)
    app.after_request(record)


# ------------------------------------------------------------------------------------------------ scrape
class DatabaseCollector(Collector):
    """Gauges read from the database at scrape time: served versions and their age, training runs and queue."""

    def __init__(self, database: Database, training_store: TrainingStore) -> None:
        self.database = database
        self.training_store = training_store

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception as error:  # the database being down must not break the scrape
            logger.warning("metrics: reading the database failed: %s", error)
            up = GaugeMetricFamily("rs_database_up", "1 when the metrics could be read from the database")
            up.add_metric([], 0)
            yield up

    def _collect(self) -> Iterator[Metric]:
        now = utcnow()
        with self.database.session() as session:
            versions = self.training_store.current_versions(session)
            runs = session.execute(
                select(TrainingRun.model_name, TrainingRun.status, func.count()).group_by(
                    TrainingRun.model_name, TrainingRun.status
                )
            ).all()
            last = session.execute(
                select(
                    TrainingRun.model_name,
                    TrainingRun.duration,
                    TrainingRun.peak_memory_mb,
                    TrainingRun.finished_at,
                )
                .where(TrainingRun.status == "completed")
                .order_by(TrainingRun.model_name, TrainingRun.finished_at.desc(), TrainingRun.id.desc())
            ).all()
            jobs = session.execute(
                select(TrainingJob.status, func.count())
                .where(TrainingJob.status.in_(("pending", "running")))
                .group_by(TrainingJob.status)
            ).all()
        up = GaugeMetricFamily("rs_database_up", "1 when the metrics could be read from the database")
        up.add_metric([], 1)
        yield up
        info = GaugeMetricFamily(
            "rs_model_version_info", "The served version of each trained model", labels=["model", "version"]
        )
        age = GaugeMetricFamily(
            "rs_model_version_age_seconds", "Age of the served version of each trained model", labels=["model"]
        )
        for name, version in sorted(versions.items()):
            info.add_metric([name, version.version], 1)
            age.add_metric([name], max(0.0, (now - version.created_at).total_seconds()))
        yield info
        yield age
        counts = GaugeMetricFamily(
            "rs_training_runs", "Training runs recorded, by model and status", labels=["model", "status"]
        )
        for name, status, count in runs:
            counts.add_metric([name, status], int(count))
        yield counts
        failures = GaugeMetricFamily(
            "rs_training_failures", "Failed training runs recorded, by model", labels=["model"]
        )
        for name, status, count in runs:
            if status == "failed":
                failures.add_metric([name], int(count))
        yield failures
        duration = GaugeMetricFamily(
            "rs_training_last_duration_seconds", "Duration of the last completed training, by model", labels=["model"]
        )
        memory = GaugeMetricFamily(
            "rs_training_last_peak_memory_mb", "Peak memory of the last completed training, by model", labels=["model"]
        )
        finished = GaugeMetricFamily(
            "rs_training_last_success_timestamp_seconds", "When the last training completed, by model", labels=["model"]
        )
        seen: set[str] = set()
        for name, seconds, peak, finished_at in last:
            if name in seen:
                continue
            seen.add(name)
            if seconds is not None:
                duration.add_metric([name], float(seconds))
            if peak is not None:
                memory.add_metric([name], float(peak))
            if finished_at is not None:
                finished.add_metric([name], (finished_at - _EPOCH).total_seconds())
        yield duration
        yield memory
        yield finished
        queue = GaugeMetricFamily("rs_training_jobs", "Training jobs waiting or running", labels=["status"])
        found = dict(jobs)
        for status in ("pending", "running"):
            queue.add_metric([status], int(found.get(status, 0)))
        yield queue


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def exposition(database: Database, training_store: TrainingStore) -> bytes:
    """The text exposition of a scrape: this process's (or, in multi-process mode, every worker's) metrics plus
    the database gauges."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        process_part = generate_latest(registry)
    else:
        process_part = generate_latest(REGISTRY)
    database_registry = CollectorRegistry()
    database_registry.register(DatabaseCollector(database, training_store))
    return process_part + generate_latest(database_registry)
