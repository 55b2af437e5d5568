"""Training one model: hyper-parameters from the configuration in force, fit with peak-memory sampling, and the
artefact written atomically with its manifest.

Hyper-parameters reach a model through ``TrainingData.hyperparameters`` as the model's config section under its
config key (``{"ease_config": {...}}``, ``{"gru4rec_config": {...}}``, ...) plus ``event_weights`` (the weights of
views, add-to-carts, orders and reviews shared by the models learned from events); the models read them with
``interactions.config_from`` / ``event_weights_from``.

Peak memory is the greatest resident set size (RSS) of the trainer process, sampled by a background thread every
``MemorySampler.interval`` seconds while the model fits and saves (ecoseller sampled it at a few points only), in
MB (2**20 bytes) and as a percentage of the machine's RAM.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from recommender_system.prediction.config import PipelineConfig
from recommender_system.prediction.models.base import FitReport, PredictionModel, TrainingData
from recommender_system.storage.artefacts import ArtefactStore

logger = logging.getLogger(__name__)

ModelFactory = Callable[[str], type[PredictionModel]]


def hyperparameters_for(model_name: str, config: PipelineConfig) -> dict[str, Any]:
    """The part of the configuration a model trains with: its own section and the event weights."""
    hyperparameters: dict[str, Any] = {"event_weights": config.event_weights.model_dump()}
    section = getattr(config, f"{model_name}_config", None)
    if section is not None:
        hyperparameters[f"{model_name}_config"] = section.model_dump()
    return hyperparameters


class MemorySampler:
    """Samples this process's RSS in a daemon thread; ``peak_mb`` and ``peak_percentage`` after ``stop``."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self._process = psutil.Process()
        self._total = psutil.virtual_memory().total
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _sample(self) -> None:
        try:
            self._peak = max(self._peak, self._process.memory_info().rss)
        except psutil.Error:  # pragma: no cover - the process always exists while it samples itself
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> MemorySampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def peak_mb(self) -> float:
        return self._peak / 2**20

    @property
    def peak_percentage(self) -> float:
        return 100.0 * self._peak / self._total if self._total else 0.0


@dataclass
class TrainedVersion:
    """What one training produced (the artefact is on disk, not yet published)."""

    model_name: str
    version: str
    report: FitReport
    manifest: dict[str, Any]
    fit_seconds: float
    save_seconds: float
    peak_memory_mb: float
    peak_memory_percentage: float
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        """The model's own validation metrics plus the training's sizes and timings."""
        return {
            **{key: _plain(value) for key, value in self.report.metrics.items()},
            "n_items": self.report.n_items,
            "n_users": self.report.n_users,
            "n_events": self.report.n_events,
            "fit_seconds": round(self.fit_seconds, 3),
            "save_seconds": round(self.save_seconds, 3),
        }


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers (JSON columns)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def train_model(
    model_class: type[PredictionModel],
    model_name: str,
    version: str,
    data: TrainingData,
    artefacts: ArtefactStore,
    data_snapshot: dict[str, Any],
    on_phase: Callable[[str], None] | None = None,
) -> TrainedVersion:
    """Fit a fresh instance of ``model_class`` on ``data`` and write its artefact as ``model_name/version``.

    Raises whatever the model raises; a failed write leaves no directory behind (``ArtefactStore.write``).
    """
    model = model_class()
    with MemorySampler() as memory:
        if on_phase:
            on_phase("fit")
        started = time.perf_counter()
        report = model.fit(data)
        fit_seconds = time.perf_counter() - started
        if on_phase:
            on_phase("save")
        started = time.perf_counter()
        chosen = {key: _plain(value) for key, value in report.hyperparameters.items()}
        manifest = artefacts.write(
            model_name,
            version,
            lambda directory: _save(model, directory),
            data_snapshot=data_snapshot,
            metrics={key: _plain(value) for key, value in report.metrics.items()},
            extra={
                "hyperparameters": chosen,
                "n_items": report.n_items,
                "n_users": report.n_users,
                "n_events": report.n_events,
            },
        )
        save_seconds = time.perf_counter() - started
    return TrainedVersion(
        model_name=model_name,
        version=version,
        report=report,
        manifest=manifest,
        fit_seconds=fit_seconds,
        save_seconds=save_seconds,
        peak_memory_mb=memory.peak_mb,
        peak_memory_percentage=memory.peak_percentage,
        hyperparameters={"config": dict(data.hyperparameters), "selected": chosen},
    )


def _save(model: PredictionModel, directory: Path) -> None:
    model.save(directory)
