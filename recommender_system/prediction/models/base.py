"""The one small interface every prediction model implements.

A model is pure: it fits on plain frames (``TrainingData``), answers from its fitted state and the in-memory
``CatalogSnapshot``, and saves/loads its artefact to/from a directory. It never imports storage, Flask or the
container. Models return *scores*; the pipeline alone sorts, filters, de-duplicates, truncates and falls back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from recommender_system.domain import CatalogSnapshot, Page, Phase, RecommendationContext
from recommender_system.prediction.models.registry import SPECS, ModelSpec


@dataclass
class TrainingData:
    """What the trainer hands a model to fit on; every frame may be empty.

    ``events``: one row per shopper event, columns ``user_key`` (user id, or ``"s:<session id>"`` for an
    anonymous session), ``session_id``, ``sku``, ``event`` (``view``, ``cart``, ``order``, ``review``),
    ``weight`` (float; quantity for orders, rating for reviews, 1 otherwise) and ``timestamp`` (UTC datetime),
    sorted by timestamp.
    ``variants``: one row per catalogue variant, columns ``sku``, ``product_id``, ``price``, ``stock``,
    ``eligible``; ``attributes``: ``sku``, ``attribute_type_id``, ``type`` (``CATEGORICAL``/``NUMERICAL``),
    ``raw_value``, ``numeric_value``.
    """

    events: pd.DataFrame = field(default_factory=pd.DataFrame)
    variants: pd.DataFrame = field(default_factory=pd.DataFrame)
    attributes: pd.DataFrame = field(default_factory=pd.DataFrame)
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass
class FitReport:
    """What a fit tells the trainer: the chosen hyper-parameters and metrics of its own validation."""

    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    n_items: int = 0
    n_users: int = 0
    n_events: int = 0


class ModelNotFittedError(RuntimeError):
    """A model was asked to serve or save before it was fitted."""


class UnsupportedOperationError(RuntimeError):
    """A model was asked for a phase or operation it does not declare."""


class PredictionModel(ABC):
    """Base of every model. Subclasses set ``name``; abilities come from the registry entry."""

    name: ClassVar[str]
    artefact_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, version: str | None = None) -> None:
        self.version = version

    # --- identity and abilities -------------------------------------------------------------------------
    @classmethod
    def spec(cls) -> ModelSpec:
        return SPECS[cls.name]

    @classmethod
    def can(cls, phase: Phase, page: Page) -> bool:
        return cls.spec().can(phase, page)

    @property
    def identifier(self) -> str:
        """``name`` for untrained models; ``name_version`` for a loaded trained one (ecoseller's format)."""
        return self.name if self.version is None else f"{self.name}_{self.version}"

    # --- serving ----------------------------------------------------------------------------------------
    def is_ready(self, ctx: RecommendationContext, catalog: CatalogSnapshot) -> bool:
        """Whether the model can answer this request at all (cheap; no I/O)."""
        return True

    def retrieve(self, ctx: RecommendationContext, catalog: CatalogSnapshot, size: int) -> np.ndarray:
        """Indices into ``catalog`` of up to ``size`` candidates, best first. The pipeline filters them."""
        raise UnsupportedOperationError(f"{self.name} does not retrieve")

    @abstractmethod
    def score(self, ctx: RecommendationContext, catalog: CatalogSnapshot, candidates: np.ndarray) -> np.ndarray:
        """One float per candidate index (higher is better); NaN where the model cannot score that item."""

    # --- training ---------------------------------------------------------------------------------------
    def fit(self, data: TrainingData) -> FitReport:
        raise UnsupportedOperationError(f"{self.name} is not trained")

    def save(self, directory: Path) -> None:
        """Write the fitted state into ``directory`` (which exists and is private to this version)."""
        raise UnsupportedOperationError(f"{self.name} has no artefact")

    @classmethod
    def load(cls, directory: Path, version: str) -> PredictionModel:
        raise UnsupportedOperationError(f"{cls.name} has no artefact")


def rank_scores(scores: np.ndarray) -> np.ndarray:
    """Order of candidates by descending score, NaN last, ties kept in input order (stable)."""
    keyed = np.where(np.isnan(scores), -np.inf, scores)
    return np.argsort(-keyed, kind="stable")


def normalise_sequence(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def load_mapped(path: Path) -> np.ndarray:
    """A saved array memory-mapped read-only (the processes serving one artefact share its pages), as a plain
    ``ndarray`` view: indexing a ``np.memmap`` wraps every result in a new memmap, several microseconds a call."""
    return np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))
