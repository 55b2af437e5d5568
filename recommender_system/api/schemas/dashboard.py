"""Schemas of the dashboard routes: the three ecoseller pages (notes 1.7, exact camelCase keys) and the JSON routes
of the built-in dashboard page (``/ui/api/...``).

Query parameters ``date_from`` / ``date_to`` accept ISO-8601 with or without fractional seconds, with ``Z`` or an
offset (a value without one is taken as UTC); they are compared as naive UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator
from pydantic.alias_generators import to_camel

from recommender_system.domain import Page
from recommender_system.managers.monitoring import (
    ConfigurationView,
    ModelState,
    PerformanceFigures,
    PerformanceView,
    Stat,
    TimeSeries,
    TrainingFigures,
    TrainingView,
    VersionState,
)
from recommender_system.storage.training import RunInfo

_SPACE_OFFSET = re.compile(r"^(.*T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")


def _plus_offset(value: object) -> object:
    """A ``+hh:mm`` offset sent unencoded in a query string arrives as `` hh:mm`` (``+`` decodes to a space)."""
    if isinstance(value, str):
        match = _SPACE_OFFSET.match(value.strip())
        if match:
            return f"{match.group(1)}+{match.group(2)}"
    return value


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _iso_utc(value: datetime) -> str:
    return value.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


UtcDatetime = Annotated[datetime, BeforeValidator(_plus_offset), AfterValidator(_naive_utc)]
"""Input: any ISO-8601 date-time; held as naive UTC."""
UtcTimestamp = Annotated[datetime, PlainSerializer(_iso_utc, return_type=str)]
"""Output: a naive UTC date-time written as ISO-8601 with ``Z``."""


class _Out(BaseModel):
    """camelCase keys on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


# ------------------------------------------------------------------------------------------------ queries
class DateWindowQuery(BaseModel):
    """``?date_from=...&date_to=...`` (both required; ``date_from`` <= ``date_to``)."""

    model_config = ConfigDict(extra="ignore")

    date_from: UtcDatetime = Field(description="window start, ISO-8601, e.g. 2023-08-28T09:30:01.947Z")
    date_to: UtcDatetime = Field(description="window end (inclusive), ISO-8601")

    @model_validator(mode="after")
    def _ordered(self) -> DateWindowQuery:
        if self.date_from > self.date_to:
            raise ValueError("date_from must not be after date_to")
        return self


class TimeSeriesQuery(DateWindowQuery):
    bucket: Literal["hour", "day"] = Field("hour", description="one point per hour or per (UTC) day")
    group_by: Literal["model", "page"] = Field("model", description="one series per scoring model or page type")
    page: Page | None = Field(None, description="only predictions of this page type")


class RunsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(100, ge=1, le=1000)
    model_name: str | None = None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model_name: str = Field(description="a trained model, e.g. ease")
    version: str | None = Field(None, description="the version to serve; default: the one before the current")


# ------------------------------------------------------------------------------------------------ ModelInfo
class ModelInfo(_Out):
    name: str
    title: str
    description: str
    disabled: bool
    can_be_trained: bool
    is_ready_for_training: bool
    is_trained: bool

    @classmethod
    def of(cls, state: ModelState) -> ModelInfo:
        return cls(
            name=state.name,
            title=state.title,
            description=state.description,
            disabled=state.disabled,
            can_be_trained=state.can_be_trained,
            is_ready_for_training=state.is_ready_for_training,
            is_trained=state.is_trained,
        )


class AvgMax(_Out):
    avg: float | None
    max: float | None

    @classmethod
    def of(cls, stat: Stat) -> AvgMax:
        return cls(avg=stat.avg, max=stat.max)


class TitleDescription(_Out):
    title: str
    description: str


# ------------------------------------------------------------------------------------------------ configuration
class ConfigurationResponse(_Out):
    """``GET /dashboard/configuration``: every model (dummy first), the config in force and its field titles."""

    models: list[ModelInfo]
    config: dict[str, Any] = Field(
        description="the config in force (the Config schema, camelCase, every cascade filled in)"
    )
    info: dict[str, Any] = Field(description="a {title, description} per config key; nested per model config")

    @classmethod
    def of(cls, view: ConfigurationView) -> ConfigurationResponse:
        return cls(models=[ModelInfo.of(m) for m in view.models], config=view.config, info=view.info)


# ------------------------------------------------------------------------------------------------ performance
class PerformanceMetrics(_Out):
    hit_rate: float | None
    future_hit_rate: float | None
    coverage: float | None
    predictions: int
    retrieval_duration: AvgMax
    scoring_duration: AvgMax
    ordering_duration: AvgMax

    @classmethod
    def of(cls, figures: PerformanceFigures) -> PerformanceMetrics:
        return cls(
            hit_rate=figures.hit_rate,
            future_hit_rate=figures.future_hit_rate,
            coverage=figures.coverage,
            predictions=figures.predictions,
            retrieval_duration=AvgMax.of(figures.retrieval),
            scoring_duration=AvgMax.of(figures.scoring),
            ordering_duration=AvgMax.of(figures.ordering),
        )


class PerfData(_Out):
    k: int
    data: PerformanceMetrics


class Performance(_Out):
    general: PerfData
    model_specific: dict[str, PerfData]


class PerfInfo(_Out):
    hit_rate: TitleDescription
    future_hit_rate: TitleDescription
    coverage: TitleDescription


PERF_INFO = PerfInfo(
    hit_rate=TitleDescription(
        title="Hit rate @ %k%",
        description="Share of the model's recommendations after which the shopper's next product view was one of "
        "the top %k% recommended products.",
    ),
    future_hit_rate=TitleDescription(
        title="Future hit rate @ %k%",
        description="Share of the model's recommendations whose top %k% products include one the shopper viewed "
        "later in the same session.",
    ),
    coverage=TitleDescription(
        title="Coverage",
        description="Share of the live product variants that appeared in the top %k% of the model's recommendations.",
    ),
)


class PerformanceResponse(_Out):
    """``GET /dashboard/performance``: online metrics over the window, overall and per model."""

    models: list[ModelInfo]
    performance: Performance
    info: PerfInfo

    @classmethod
    def of(cls, view: PerformanceView) -> PerformanceResponse:
        return cls(
            models=[ModelInfo.of(m) for m in view.models],
            performance=Performance(
                general=PerfData(k=view.k, data=PerformanceMetrics.of(view.general)),
                model_specific={
                    name: PerfData(k=view.k, data=PerformanceMetrics.of(figures))
                    for name, figures in view.by_model.items()
                },
            ),
            info=PERF_INFO,
        )


# ------------------------------------------------------------------------------------------------ training
class TrainingCounts(_Out):
    started: int
    completed: int
    failed: int = Field(description="runs that ended in failure (runs still in progress are not failures)")
    running: int


class TrainingMetrics(_Out):
    trainings: TrainingCounts
    peak_memory: AvgMax = Field(description="MB, over the completed runs")
    peak_memory_percentage: AvgMax = Field(description="% of physical memory, over the completed runs")
    duration: AvgMax = Field(description="seconds, over the completed runs")

    @classmethod
    def of(cls, figures: TrainingFigures) -> TrainingMetrics:
        return cls(
            trainings=TrainingCounts(
                started=figures.started,
                completed=figures.completed,
                failed=figures.failed,
                running=figures.running,
            ),
            peak_memory=AvgMax.of(figures.peak_memory),
            peak_memory_percentage=AvgMax.of(figures.peak_memory_percentage),
            duration=AvgMax.of(figures.duration),
        )


class TrainData(_Out):
    data: TrainingMetrics


class Training(_Out):
    general: TrainData
    model_specific: dict[str, TrainData]


class TrainingResponse(_Out):
    """``GET /dashboard/training``: training runs started in the window, overall and per model."""

    models: list[ModelInfo]
    training: Training

    @classmethod
    def of(cls, view: TrainingView) -> TrainingResponse:
        return cls(
            models=[ModelInfo.of(m) for m in view.models],
            training=Training(
                general=TrainData(data=TrainingMetrics.of(view.general)),
                model_specific={
                    name: TrainData(data=TrainingMetrics.of(figures)) for name, figures in view.by_model.items()
                },
            ),
        )


# ------------------------------------------------------------------------------------------------ built-in page
class SeriesValues(_Out):
    """One series, aligned with ``buckets``; rates are fractions, durations seconds (averages)."""

    predictions: list[int]
    hit_rate: list[float | None]
    future_hit_rate: list[float | None]
    coverage: list[float | None]
    latency: list[float | None] = Field(description="average retrieval + scoring + ordering time (s)")
    retrieval_duration: list[float | None]
    scoring_duration: list[float | None]
    ordering_duration: list[float | None]


def _sum_avg(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


class TimeSeriesResponse(_Out):
    """``GET /ui/api/timeseries``: one point per bucket for all predictions and per model or page type."""

    bucket: str
    group_by: str
    page: str | None
    k: int
    live_variants: int
    buckets: list[UtcTimestamp]
    series: dict[str, SeriesValues]

    @classmethod
    def of(cls, view: TimeSeries, k: int) -> TimeSeriesResponse:
        series = {
            name: SeriesValues(
                predictions=[f.predictions for f in points],
                hit_rate=[f.hit_rate for f in points],
                future_hit_rate=[f.future_hit_rate for f in points],
                coverage=[f.coverage if f.predictions else None for f in points],
                latency=[_sum_avg(f.retrieval.avg, f.scoring.avg, f.ordering.avg) for f in points],
                retrieval_duration=[f.retrieval.avg for f in points],
                scoring_duration=[f.scoring.avg for f in points],
                ordering_duration=[f.ordering.avg for f in points],
            )
            for name, points in view.series.items()
        }
        return cls(
            bucket=view.bucket,
            group_by=view.group_by,
            page=view.page,
            k=k,
            live_variants=view.live_variants,
            buckets=view.buckets,
            series=series,
        )


class TrainingRunOut(_Out):
    id: int
    job_id: int | None
    model_name: str
    version: str | None
    status: str
    started_at: UtcTimestamp
    finished_at: UtcTimestamp | None
    duration: float | None
    peak_memory_mb: float | None
    peak_memory_percentage: float | None
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None

    @classmethod
    def of(cls, run: RunInfo) -> TrainingRunOut:
        return cls(
            id=run.id,
            job_id=run.job_id,
            model_name=run.model_name,
            version=run.version,
            status=run.status,
            started_at=run.started_at,
            finished_at=run.finished_at,
            duration=run.duration,
            peak_memory_mb=run.peak_memory_mb,
            peak_memory_percentage=run.peak_memory_percentage,
            hyperparameters=run.hyperparameters,
            metrics=run.metrics,
            error=run.error,
        )


class TrainingRunsResponse(_Out):
    """``GET /ui/api/runs``: the newest training runs, newest first."""

    runs: list[TrainingRunOut]


class VersionOut(_Out):
    model_name: str
    version: str
    created_at: UtcTimestamp
    run_id: int | None
    current: bool
    metrics: dict[str, Any] = Field(description="offline metrics of the run that trained it")

    @classmethod
    def of(cls, state: VersionState) -> VersionOut:
        return cls(
            model_name=state.model_name,
            version=state.version,
            created_at=state.created_at,
            run_id=state.run_id,
            current=state.current,
            metrics=state.metrics,
        )


class VersionsResponse(_Out):
    """``GET /ui/api/versions``: every kept version of every trained model, newest first."""

    versions: list[VersionOut]


class RollbackResponse(_Out):
    model_name: str
    version: str
