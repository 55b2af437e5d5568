"""What the dashboards show: the models and their state, online metrics of the prediction log, training statistics.

The three ecoseller dashboard routes (notes 1.7) and the built-in dashboard page read their figures from here.
Metric definitions and how they stay fast on a large log: ``storage/monitoring.py``. Before answering, a call
spends a small time budget on the incremental aggregation (rollup, hit evaluation); a background thread of the
trainer process does the same every few seconds (``start_background``), so a dashboard call never waits for a
backlog and the web workers never spend their CPU on it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from recommender_system.prediction.config import PipelineConfig, field_info
from recommender_system.prediction.models.registry import SPECS
from recommender_system.storage.config_store import ConfigStore
from recommender_system.storage.database import Database
from recommender_system.storage.monitoring import (
    EVALUATED_VIEW,
    DataCounts,
    GroupFigures,
    K,
    MonitoringStore,
    TrainingAggregate,
    bucket_start,
)
from recommender_system.storage.tables import utcnow
from recommender_system.storage.training import RunInfo, TrainingStore

logger = logging.getLogger(__name__)

MAX_BUCKETS = 5000
"""A time series has at most this many points (e.g. 200 days by hour)."""


@dataclass(frozen=True)
class ModelState:
    """A model as the dashboards list it (ecoseller's ModelInfo)."""

    name: str
    title: str
    description: str
    disabled: bool
    can_be_trained: bool
    is_ready_for_training: bool
    is_trained: bool


@dataclass(frozen=True)
class Stat:
    avg: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class PerformanceFigures:
    predictions: int
    hit_rate: float | None
    future_hit_rate: float | None
    coverage: float | None
    retrieval: Stat
    scoring: Stat
    ordering: Stat


@dataclass(frozen=True)
class TrainingFigures:
    started: int = 0
    completed: int = 0
    failed: int = 0
    running: int = 0
    peak_memory: Stat = field(default_factory=Stat)
    peak_memory_percentage: Stat = field(default_factory=Stat)
    duration: Stat = field(default_factory=Stat)


@dataclass(frozen=True)
class ConfigurationView:
    models: list[ModelState]
    config: dict[str, Any]
    info: dict[str, Any]


@dataclass(frozen=True)
class PerformanceView:
    models: list[ModelState]
    k: int
    general: PerformanceFigures
    by_model: dict[str, PerformanceFigures]


@dataclass(frozen=True)
class TrainingView:
    models: list[ModelState]
    general: TrainingFigures
    by_model: dict[str, TrainingFigures]


@dataclass(frozen=True)
class SeriesPoint:
    bucket: datetime
    figures: PerformanceFigures


@dataclass(frozen=True)
class TimeSeries:
    """Figures per bucket for every group (``"all"`` plus each model or page type seen)."""

    bucket: str
    group_by: str
    page: str | None
    buckets: list[datetime]
    live_variants: int
    series: dict[str, list[PerformanceFigures]]


@dataclass(frozen=True)
class VersionState:
    model_name: str
    version: str
    created_at: datetime
    run_id: int | None
    current: bool
    metrics: dict[str, Any]


@dataclass(frozen=True)
class RefreshReport:
    rolled_up: int = 0
    views: int = 0
    evaluated: int = 0
    settled: int = 0
    complete: bool = True
    skipped: bool = False


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _figures(
    group: GroupFigures | None, live_variants: int, retrieval: GroupFigures | None = None
) -> PerformanceFigures:
    """Rates of one group; ``retrieval`` (the model's predictions as retrieval model) gives retrieval durations."""
    group = group or GroupFigures()
    source = group if retrieval is None else retrieval
    return PerformanceFigures(
        predictions=group.predictions,
        hit_rate=_rate(group.hits, group.predictions),
        future_hit_rate=_rate(group.future_hits, group.predictions),
        coverage=_rate(group.covered, live_variants) if group.predictions else (0.0 if live_variants else None),
        retrieval=Stat(source.retrieval.average, source.retrieval.maximum),
        scoring=Stat(group.scoring.average, group.scoring.maximum),
        ordering=Stat(group.ordering.average, group.ordering.maximum),
    )


def _training_figures(rows: list[TrainingAggregate]) -> TrainingFigures:
    by_status: dict[str, int] = {}
    completed = [row for row in rows if row.status == "completed"]
    for row in rows:
        by_status[row.status] = by_status.get(row.status, 0) + row.runs

    def stat(total: str, count: str, maximum: str) -> Stat:
        n = sum(getattr(row, count) for row in completed)
        highs = [getattr(row, maximum) for row in completed if getattr(row, maximum) is not None]
        return Stat(sum(getattr(row, total) for row in completed) / n if n else None, max(highs) if highs else None)

    return TrainingFigures(
        started=sum(by_status.values()),
        completed=by_status.get("completed", 0),
        failed=by_status.get("failed", 0),
        running=by_status.get("running", 0),
        peak_memory=stat("memory_sum", "memory_count", "memory_max"),
        peak_memory_percentage=stat("memory_pct_sum", "memory_pct_count", "memory_pct_max"),
        duration=stat("duration_sum", "duration_count", "duration_max"),
    )


def ready_for_training(name: str, counts: DataCounts, config: PipelineConfig) -> bool:
    """Enough data to train ``name`` (ecoseller's multipliers: events per live variant)."""
    spec = SPECS[name]
    if not spec.trainable or counts.live_variants < 2:
        return False
    if name == "similarity":
        return True
    if name == "gru4rec":
        return counts.views > 0 and counts.views > config.gru4rec_config.events_multiplier * counts.live_variants
    if name == "ease":
        return counts.events > 0 and counts.events > config.ease_config.reviews_multiplier * counts.live_variants
    return counts.events > 0  # als, cooccurrence: any shopper interaction


class MonitoringManager:
    """Figures for the dashboards, and the incremental aggregation that keeps them cheap."""

    def __init__(
        self,
        database: Database,
        monitoring_store: MonitoringStore,
        config_store: ConfigStore,
        training_store: TrainingStore,
        refresh_budget_seconds: float = 0.3,
    ) -> None:
        self.database = database
        self.store = monitoring_store
        self.config_store = config_store
        self.training_store = training_store
        self.refresh_budget_seconds = refresh_budget_seconds
        self._refresh_lock = threading.Lock()
        self._live: tuple[tuple[int, int], list[tuple[str, int | None]]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ aggregation
    def refresh(
        self,
        now: datetime | None = None,
        max_seconds: float | None = None,
        wait: bool = False,
        chunk: int = 10_000,
    ) -> RefreshReport:
        """Fold new predictions into the rollup, evaluate the sessions with new views or predictions, settle old
        predictions; stops after ``max_seconds`` (None: until done). Skipped when another process is aggregating,
        or another thread of this one (``wait``: after waiting up to ``max_seconds`` for it to finish)."""
        timeout = -1 if max_seconds is None else max_seconds
        if not self._refresh_lock.acquire(blocking=wait, timeout=timeout if wait else -1):
            return RefreshReport(complete=False, skipped=True)
        try:
            return self._refresh(now, max_seconds, chunk)
        finally:
            self._refresh_lock.release()

    def _refresh(self, now: datetime | None, max_seconds: float | None, chunk: int) -> RefreshReport:
        now = now or utcnow()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        rolled = views = evaluated = settled = 0

        def over() -> bool:
            return deadline is not None and time.monotonic() > deadline

        complete = False
        while True:  # 1. new predictions -> rollup, and their sessions evaluated (views may have come first)
            with self.database.write_session() as session:
                if not self.store.try_lock(session):
                    return RefreshReport(rolled, views, evaluated, settled, False, True)
                count, sessions, done = self.store.rollup_step(session, now, chunk)
                evaluated += self.store.evaluate_sessions(session, sessions)
            rolled += count
            if done:
                complete = True
                break
            if over():
                break
        while complete:  # 2. new views -> their sessions evaluated
            with self.database.write_session() as session:
                if not self.store.try_lock(session):
                    return RefreshReport(rolled, views, evaluated, settled, False, True)
                sessions, count, high, done = self.store.new_view_sessions(session, chunk)
                evaluated += self.store.evaluate_sessions(session, sessions)
                if count:
                    self.store.set_watermark(session, EVALUATED_VIEW, high)
            views += count
            if done:
                break
            if over():
                complete = False
                break
        if complete:  # 3. predictions past the session horizon without a later view: misses
            with self.database.write_session() as session:
                if self.store.try_lock(session):
                    settled = self.store.settle(session, now)
        if rolled or views or settled:
            logger.debug(
                "monitoring: rolled up %d predictions, %d new views, %d evaluations, %d settled",
                rolled,
                views,
                evaluated,
                settled,
            )
        return RefreshReport(rolled, views, evaluated, settled, complete)

    def start_background(self, interval_seconds: float = 10.0) -> None:
        """Run ``refresh`` every ``interval_seconds`` in a daemon thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.wait(interval_seconds):
                try:
                    self.refresh(max_seconds=max(1.0, interval_seconds / 2))
                except Exception:  # keep the thread alive; the next round retries
                    logger.exception("monitoring aggregation failed")

        self._thread = threading.Thread(target=run, name="monitoring-aggregation", daemon=True)
        self._thread.start()

    def stop_background(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    def _live_variants(self, session: Any) -> list[tuple[str, int | None]]:
        """The live variants with their monitoring ids, kept until the catalogue or the SKU ids change."""
        version = self.store.live_variants_version(session)
        cached = self._live
        if cached is None or cached[0] != version:
            cached = self._live = (version, self.store.live_variants(session))
        return cached[1]

    # ------------------------------------------------------------------------------------------ model states
    def model_states(self, include_dummy: bool) -> list[ModelState]:
        """Every model the service serves, in level order, with its real state."""
        with self.database.session() as session:
            config = self.config_store.latest(session)
            trained = set(self.training_store.current_versions(session))
            live = self.store.live_variant_count(session)
            multiplier = max(config.gru4rec_config.events_multiplier, config.ease_config.reviews_multiplier)
            counts = self.store.data_counts(session, live, cap=math.ceil(multiplier * live) + 1)
        return [
            ModelState(
                name=spec.name,
                title=spec.title,
                description=spec.description,
                disabled=config.is_disabled(spec.name),
                can_be_trained=spec.trainable,
                is_ready_for_training=ready_for_training(spec.name, counts, config),
                is_trained=(spec.name in trained) if spec.trainable else True,
            )
            for spec in SPECS.values()
            if include_dummy or spec.name != "dummy"
        ]

    # ------------------------------------------------------------------------------------------ dashboard pages
    def configuration(self) -> ConfigurationView:
        with self.database.session() as session:
            config = self.config_store.latest(session)
        return ConfigurationView(self.model_states(include_dummy=True), config.to_wire(), field_info())

    def performance(self, date_from: datetime, date_to: datetime) -> PerformanceView:
        """Online metrics of the predictions logged in ``[date_from, date_to]`` (naive UTC)."""
        self.refresh(max_seconds=self.refresh_budget_seconds, wait=True)
        models = self.model_states(include_dummy=False)
        with self.database.session() as session:
            window = self.store.window(session, date_from, date_to, live=self._live_variants(session))
        live = window.live_variants
        general = _figures(window.groups["general"].get((None,)), live)
        by_model = {
            m.name: _figures(
                window.groups["model"].get((None, m.name)),
                live,
                retrieval=window.groups["retrieval"].get((None, m.name)) or GroupFigures(),
            )
            for m in models
        }
        return PerformanceView(models, K, general, by_model)

    def training(self, date_from: datetime, date_to: datetime) -> TrainingView:
        """Training runs started in ``[date_from, date_to]``: counts (failed excludes running), durations, memory."""
        models = self.model_states(include_dummy=False)
        with self.database.session() as session:
            rows = self.store.training_aggregates(session, date_from, date_to)
        by_model = {m.name: _training_figures([r for r in rows if r.model_name == m.name]) for m in models}
        return TrainingView(models, _training_figures(rows), by_model)

    # ------------------------------------------------------------------------------------------ built-in page
    def timeseries(
        self,
        date_from: datetime,
        date_to: datetime,
        bucket: str = "hour",
        group_by: str = "model",
        page: str | None = None,
    ) -> TimeSeries:
        """Figures per hour or day, for all predictions and per model (or page type), optionally of one page."""
        if bucket not in ("hour", "day"):
            raise ValueError("bucket must be 'hour' or 'day'")
        if group_by not in ("model", "page"):
            raise ValueError("group_by must be 'model' or 'page'")
        step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
        first = bucket_start(date_from, bucket)
        assert first is not None
        if (date_to - first) / step > MAX_BUCKETS:
            raise ValueError(f"too many {bucket}s between date_from and date_to (at most {MAX_BUCKETS})")
        self.refresh(max_seconds=self.refresh_budget_seconds, wait=True)
        with self.database.session() as session:
            window = self.store.window(
                session, date_from, date_to, bucket=bucket, page=page, live=self._live_variants(session)
            )
        buckets: list[datetime] = []
        moment = first
        while moment <= date_to:
            buckets.append(moment)
            moment += step
        live = window.live_variants
        general = window.groups["general"]
        grouped = window.groups[group_by]
        series: dict[str, list[PerformanceFigures]] = {"all": [_figures(general.get((b,)), live) for b in buckets]}
        names = sorted({group[1] for group in grouped})
        order = list(SPECS) if group_by == "model" else ["HOMEPAGE", "PRODUCT_DETAIL", "CATEGORY_LIST", "CART"]
        names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
        for name in names:
            series[name] = [_figures(grouped.get((b, name)), live) for b in buckets]
        return TimeSeries(bucket, group_by, page, buckets, live, series)

    def training_runs(self, limit: int = 100, model_name: str | None = None) -> list[RunInfo]:
        """The newest training runs, newest first."""
        with self.database.session() as session:
            runs = self.training_store.runs(session, model_name=model_name)
        return list(reversed(runs))[:limit]

    def versions(self) -> list[VersionState]:
        """Every kept version of every trained model, newest first, with its run's offline metrics."""
        states: list[VersionState] = []
        with self.database.session() as session:
            runs = {run.id: run for run in self.training_store.runs(session)}
            for name, spec in SPECS.items():
                if not spec.trainable:
                    continue
                current = self.training_store.current_version(session, name)
                for version in self.training_store.versions(session, name):
                    run = runs.get(version.run_id) if version.run_id is not None else None
                    states.append(
                        VersionState(
                            model_name=name,
                            version=version.version,
                            created_at=version.created_at,
                            run_id=version.run_id,
                            current=version.version == current,
                            metrics=dict(run.metrics) if run is not None else dict(version.manifest.get("metrics", {})),
                        )
                    )
        return states
