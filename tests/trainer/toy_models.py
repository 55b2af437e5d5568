"""Tiny prediction models for the trainer's tests, handed to the trainer through its ``model_factory`` parameter.

``ToyModel`` learns the number of events and items and saves them as a numpy array; the others fail in a chosen
place (``fit``, half-way through ``save``) or call a hook during ``fit`` (to simulate a signal or a slow fit).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from recommender_system.domain import CatalogSnapshot, RecommendationContext
from recommender_system.prediction.models.base import FitReport, PredictionModel, TrainingData


class ToyModel(PredictionModel):
    name: ClassVar[str] = "ease"
    fits: ClassVar[list[TrainingData]] = []

    def __init__(self, version: str | None = None) -> None:
        super().__init__(version)
        self.counts = np.zeros(2, dtype=np.int64)

    def fit(self, data: TrainingData) -> FitReport:
        type(self).fits.append(data)
        n_items = int(data.events["sku"].nunique()) if len(data.events) else 0
        self.counts = np.array([len(data.events), n_items], dtype=np.int64)
        return FitReport(
            hyperparameters={"lambda": np.float64(30.0)},
            metrics={"ndcg@20": np.float32(0.25), "recall@20": 0.5},
            n_items=n_items,
            n_users=int(data.events["user_key"].nunique()) if len(data.events) else 0,
            n_events=len(data.events),
        )

    def save(self, directory: Path) -> None:
        np.save(directory / "counts.npy", self.counts)
        (directory / "meta").mkdir()
        (directory / "meta" / "info.json").write_text(json.dumps({"events": int(self.counts[0])}))

    @classmethod
    def load(cls, directory: Path, version: str) -> ToyModel:
        model = cls(version)
        model.counts = np.load(directory / "counts.npy")
        return model

    def score(self, ctx: RecommendationContext, catalog: CatalogSnapshot, candidates: np.ndarray) -> np.ndarray:
        return np.zeros(len(candidates))


class FailingFitModel(ToyModel):
    def fit(self, data: TrainingData) -> FitReport:
        raise RuntimeError("the toy model refuses to fit")


class CrashingSaveModel(ToyModel):
    """Writes one file of its artefact, then fails (a crash mid-write)."""

    def save(self, directory: Path) -> None:
        np.save(directory / "counts.npy", self.counts)
        raise OSError("disk full (simulated) after the first file")


def hooked_model(hook: Callable[[], None], during: str = "fit") -> type[ToyModel]:
    """A ToyModel that calls ``hook`` at the start of ``fit``, or half-way through ``save`` (``during="save"``),
    e.g. to deliver a stop signal at that moment."""

    class HookedModel(ToyModel):
        def fit(self, data: TrainingData) -> FitReport:
            if during == "fit":
                hook()
            return super().fit(data)

        def save(self, directory: Path) -> None:
            np.save(directory / "counts.npy", self.counts)
            if during == "save":
                hook()
            (directory / "done.txt").write_text("complete")

    return HookedModel


def slow_model(seconds: float) -> type[ToyModel]:
    class SlowModel(ToyModel):
        def fit(self, data: TrainingData) -> FitReport:
            time.sleep(seconds)
            return super().fit(data)

    return SlowModel


def factory(classes: dict[str, type[PredictionModel]], default: type[PredictionModel] | None = None):  # type: ignore[no-untyped-def]
    """A ``model_factory`` for ``Trainer``: the class registered for a name, else ``default``."""

    def model_factory(name: str) -> type[PredictionModel]:
        if name in classes:
            return classes[name]
        if default is None:
            raise KeyError(name)
        return default

    return model_factory
